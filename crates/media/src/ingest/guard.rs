//! Which network targets a pulled stream may reach (SSRF protection).
//!
//! A stream registered through the API names a URL chosen by the caller. Without a
//! check, that URL can make the worker connect to its own loopback services, the
//! cloud metadata endpoint or the platform's private network. [`NetPolicy`] refuses
//! every address that is not globally routable unless the operator allowed it (hosts or
//! CIDR ranges in the config, since platform origins often sit on private addresses).
//! Names are resolved once and every address is checked; callers connect to the
//! checked addresses ([`NetPolicy::resolver`] for the HLS fetcher), so a name cannot
//! re-resolve elsewhere between the check and the connection.
//!
//! [`classify`] is pure and connects nowhere; resolution is injected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// What kind of address an IP is, for the SSRF check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable.
    Public,
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, unique local (fc00::/7), carrier-grade NAT (100.64.0.0/10).
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Cloud instance metadata (169.254.169.254, fd00:ec2::254, 100.100.100.200).
    Metadata,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Multicast and broadcast.
    Multicast,
    /// Documentation, benchmarking, reserved and other special-purpose ranges.
    Reserved,
    /// One of this host's own addresses (a public one included): a source there would
    /// reach the worker's own services.
    Own,
}

impl AddressClass {
    /// Whether a caller-chosen URL may reach it without an allow-list entry.
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    /// Its name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Metadata => "metadata",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
            AddressClass::Own => "this host's own",
        }
    }
}

/// Classifies an address (IPv4-mapped and -compatible IPv6 addresses as their IPv4).
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        AddressClass::Metadata
    } else if a == 0 {
        AddressClass::Unspecified
    } else if a == 127 {
        AddressClass::Loopback
    } else if a == 10
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 100 && (64..128).contains(&b))
    {
        AddressClass::Private
    } else if a == 169 && b == 254 {
        AddressClass::LinkLocal
    } else if (224..240).contains(&a) || ip.is_broadcast() {
        AddressClass::Multicast
    } else if a >= 240
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 192 && b == 88 && c == 99)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    // IPv4-compatible (deprecated ::a.b.c.d) and NAT64 (64:ff9b::/96) embed an IPv4.
    if (s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return classify_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        AddressClass::Metadata
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if s[0] & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if s[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        AddressClass::Multicast
    } else if s[0] & 0xe000 != 0x2000 || s[0] == 0x2001 && s[1] == 0xdb8 {
        // Outside global unicast (2000::/3), or documentation.
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a URL was refused. Shown to operators (logs); callers get a generic answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a URL with a host.
    #[error("not a URL with a host")]
    Malformed,
    /// A scheme the source kind does not allow.
    #[error("scheme {0:?} is not allowed here")]
    Scheme(String),
    /// The host did not resolve.
    #[error("{host}: does not resolve: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// What the resolver said.
        reason: String,
    },
    /// An address the policy refuses.
    #[error("{host} is {ip} ({}), not allowed (add it to ingest.source_allowlist to permit it)", .class.name())]
    Address {
        /// The host as written.
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// Its class.
        class: AddressClass,
    },
}

/// `url` with its secrets replaced by `***`, for errors, logs and API answers: the
/// user-info (user names and passwords), every query value (signed URLs, SRT
/// `passphrase` and `streamid`), the fragment, and an RTMP URL's stream key (the last
/// path segment after the application). A path without a scheme (a configured file) is
/// returned as it is; an unparseable URL keeps only its scheme.
pub fn redact(url: &str) -> String {
    let Some((scheme, _)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Ok(mut u) = url::Url::parse(url) else {
        return format!("{scheme}://***");
    };
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("***");
    }
    if let Some(query) = u.query() {
        // Keys stay (an operator sees which parameters there were); a part without a
        // key could be a bare token and goes whole.
        let redacted: Vec<String> = query
            .split('&')
            .map(|part| match part.split_once('=') {
                Some((key, _)) => format!("{key}=***"),
                None => "***".to_owned(),
            })
            .collect();
        u.set_query(Some(&redacted.join("&")));
    }
    u.set_fragment(None);
    if matches!(u.scheme(), "rtmp" | "rtmps") {
        let segments: Vec<String> = u
            .path_segments()
            .map(|s| s.map(str::to_owned).collect())
            .unwrap_or_default();
        if segments.len() >= 2 {
            let mut kept = segments[..segments.len() - 1].join("/");
            kept.push_str("/***");
            u.set_path(&kept);
        }
    }
    // Percent-encoding of the placeholder is undone for readability.
    u.to_string().replace("%2A%2A%2A", "***")
}

/// A URL that passed the check, with the addresses it may be reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUrl {
    /// The URL, normalised.
    pub url: url::Url,
    /// Its host (a name, or an address).
    pub host: String,
    /// Every address the host resolved to, all permitted (non-empty).
    pub addrs: Vec<SocketAddr>,
}

/// Resolves `host:port` to addresses (the system resolver in production).
pub type Resolve = dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync;

/// The system resolver.
pub fn system_resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// See the module doc. The default refuses every non-public address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    hosts: Vec<String>,
    nets: Vec<Cidr>,
    /// This host's own addresses: refused like private ones, even when public.
    own: Vec<IpAddr>,
}

impl NetPolicy {
    /// A policy allowing, beyond public addresses, the given hosts (names, matched
    /// case-insensitively) and ranges (`ADDR` or `ADDR/PREFIX`). Returns the entries
    /// that are neither.
    pub fn new(allow: &[String]) -> Result<NetPolicy, Vec<String>> {
        let mut policy = NetPolicy::default();
        let mut bad = Vec::new();
        for entry in allow {
            let e = entry.trim();
            if let Some(net) = Cidr::parse(e) {
                policy.nets.push(net);
            } else if !e.is_empty()
                && !e.contains('/')
                && e.len() <= 253
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                policy.hosts.push(e.to_ascii_lowercase());
            } else {
                bad.push(entry.clone());
            }
        }
        if bad.is_empty() { Ok(policy) } else { Err(bad) }
    }

    /// Whether `host` (as written in a URL) may be reached at `ip`. Metadata and
    /// unspecified addresses never are, whatever the allow-list says (a range such as
    /// `100.64.0.0/10` or `169.254.0.0/16` would otherwise take a metadata address in).
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match self.class(ip) {
            AddressClass::Public => true,
            AddressClass::Metadata | AddressClass::Unspecified => false,
            _ => {
                self.nets.iter().any(|n| n.contains(ip))
                    || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            }
        }
    }

    /// The policy's class of `ip`: [`classify`], except that this host's own addresses
    /// are [`AddressClass::Own`].
    pub fn class(&self, ip: IpAddr) -> AddressClass {
        match classify(ip) {
            AddressClass::Public if self.own.contains(&ip) => AddressClass::Own,
            class => class,
        }
    }

    /// The policy with `own` as this host's own addresses (see
    /// [`NetPolicy::with_own_interfaces`]).
    pub fn with_own(mut self, own: Vec<IpAddr>) -> NetPolicy {
        self.own = own;
        self
    }

    /// The policy with the addresses of this host's network interfaces as its own (a
    /// worker with a public address must not fetch from itself).
    pub fn with_own_interfaces(self) -> std::io::Result<NetPolicy> {
        let own = if_addrs::get_if_addrs()?
            .into_iter()
            .map(|i| i.ip())
            .collect();
        Ok(self.with_own(own))
    }

    /// Resolves `host:port` and checks every address.
    pub fn resolve(
        &self,
        host: &str,
        port: u16,
        resolve: &Resolve,
    ) -> Result<Vec<SocketAddr>, Refusal> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => resolve(bare, port).map_err(|e| Refusal::Resolve {
                host: bare.to_owned(),
                reason: e.to_string(),
            })?,
        };
        if addrs.is_empty() {
            return Err(Refusal::Resolve {
                host: bare.to_owned(),
                reason: "no addresses".into(),
            });
        }
        if let Some(bad) = addrs.iter().find(|a| !self.permits(bare, a.ip())) {
            return Err(Refusal::Address {
                host: bare.to_owned(),
                ip: bad.ip(),
                class: self.class(bad.ip()),
            });
        }
        Ok(addrs)
    }

    /// Checks `text`: one of `schemes`, a host, and every address it resolves to
    /// permitted.
    pub fn check(
        &self,
        text: &str,
        schemes: &[&str],
        resolve: &Resolve,
    ) -> Result<CheckedUrl, Refusal> {
        let url = url::Url::parse(text).map_err(|_| Refusal::Malformed)?;
        if !schemes.contains(&url.scheme()) {
            return Err(Refusal::Scheme(url.scheme().to_owned()));
        }
        let host = url.host_str().ok_or(Refusal::Malformed)?.to_owned();
        let port = url
            .port_or_known_default()
            .or_else(|| default_port(url.scheme()))
            .ok_or(Refusal::Malformed)?;
        let addrs = self.resolve(&host, port, resolve)?;
        Ok(CheckedUrl { url, host, addrs })
    }

    /// A resolver for the HLS fetcher (ureq): every connection, redirects included,
    /// goes only to addresses this policy permits.
    pub fn resolver(self: &Arc<Self>) -> PolicyResolver {
        PolicyResolver {
            policy: self.clone(),
        }
    }
}

/// Default ports of the schemes the `url` crate does not know.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "rtmp" => Some(1935),
        "rtmps" => Some(443),
        _ => None,
    }
}

/// [`NetPolicy::resolver`]: resolves with the system resolver and refuses a host when
/// any of its addresses is not permitted.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<NetPolicy>,
}

impl ureq::Resolver for PolicyResolver {
    fn resolve(&self, netloc: &str) -> std::io::Result<Vec<SocketAddr>> {
        let (host, port) = netloc
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| std::io::Error::other(format!("{netloc}: no port")))?;
        self.policy
            .resolve(host, port, &system_resolve)
            .map_err(|r| {
                tracing::warn!(refusal = %r, "HLS fetch refused by the source policy");
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, r.to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_own_public_address_is_refused_unless_allowed() {
        // A public address standing in for the worker's own (no connection is made:
        // the resolver is a table).
        let own: IpAddr = "8.8.4.4".parse().unwrap();
        let other: IpAddr = "8.8.8.8".parse().unwrap();
        let policy = NetPolicy::new(&[]).unwrap().with_own(vec![own]);
        assert_eq!(policy.class(own), AddressClass::Own);
        assert_eq!(policy.class(other), AddressClass::Public);
        assert!(!policy.permits("self.example", own));
        assert!(policy.permits("cdn.example", other));
        let table = move |_: &str, port: u16| Ok(vec![SocketAddr::new(own, port)]);
        assert_eq!(
            policy.check("https://self.example/a.m3u8", &["https"], &table),
            Err(Refusal::Address {
                host: "self.example".into(),
                ip: own,
                class: AddressClass::Own,
            })
        );
        // An explicit allow-list entry lets it in.
        let allowed = NetPolicy::new(&[format!("{own}/32")])
            .unwrap()
            .with_own(vec![own]);
        assert!(allowed.permits("self.example", own));
        // The interfaces of this machine are found (loopback at least).
        let mine = NetPolicy::new(&[]).unwrap().with_own_interfaces().unwrap();
        assert!(
            mine.own.contains(&IpAddr::from([127, 0, 0, 1])),
            "{:?}",
            mine.own
        );
    }

    #[test]
    fn secrets_in_urls_are_redacted() {
        for (url, shown) in [
            (
                "rtmp://ingest.example/live/sk_live_8f3a9c",
                "rtmp://ingest.example/live/***",
            ),
            (
                "rtmps://user:hunter2@ingest.example:443/app/key?auth=abc",
                "rtmps://***@ingest.example:443/app/***?auth=***",
            ),
            (
                "srt://origin.example:9000?streamid=%23%21%3A%3Ar%3Dlive&passphrase=s3cret-pass",
                "srt://origin.example:9000?streamid=***&passphrase=***",
            ),
            // An unencoded `#` starts the fragment: everything after it goes.
            (
                "srt://origin.example:9000?streamid=#!::r=live/cam,m=publish&passphrase=s3cret",
                "srt://origin.example:9000?streamid=***",
            ),
            (
                "https://cdn.example/hls/index.m3u8?Expires=1700000000&Signature=AbC~&Key-Pair-Id=K1",
                "https://cdn.example/hls/index.m3u8?Expires=***&Signature=***&Key-Pair-Id=***",
            ),
            (
                "https://cdn.example/a.m3u8#token",
                "https://cdn.example/a.m3u8",
            ),
            (
                "http://cdn.example/a.m3u8?opaque",
                "http://cdn.example/a.m3u8?***",
            ),
            ("rtmp://ingest.example/app", "rtmp://ingest.example/app"),
            ("/srv/clips/a.ts", "/srv/clips/a.ts"),
            ("rtmp://[not a url/x", "rtmp://***"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classes() {
        use AddressClass::*;
        // Expected classes from the IANA special-purpose registries (RFC 6890 and
        // successors) and the cloud providers' metadata addresses.
        let table = [
            ("8.8.8.8", Public),
            ("1.1.1.1", Public),
            ("2606:4700:4700::1111", Public),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("192.168.1.1", Private),
            ("100.64.0.1", Private),
            ("100.128.0.1", Public),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("::ffff:10.0.0.1", Private),
            ("64:ff9b::a00:1", Private),
            ("169.254.1.1", LinkLocal),
            ("fe80::1", LinkLocal),
            ("169.254.169.254", Metadata),
            ("::ffff:169.254.169.254", Metadata),
            ("fd00:ec2::254", Metadata),
            ("100.100.100.200", Metadata),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("::", Unspecified),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Multicast),
            ("ff02::1", Multicast),
            ("192.0.2.1", Reserved),
            ("198.51.100.1", Reserved),
            ("203.0.113.1", Reserved),
            ("198.18.0.1", Reserved),
            ("240.0.0.1", Reserved),
            ("2001:db8::1", Reserved),
            ("::2", Unspecified),
        ];
        for (addr, want) in table {
            assert_eq!(classify(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.255.0.1")) && !net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.1.1")));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        for bad in ["10.0.0.0/33", "fd00::/129", "host", "10.0.0/8", ""] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    /// A resolver that knows a few names and records what it was asked.
    fn fake(names: &'static [(&'static str, &'static [&'static str])]) -> Box<Resolve> {
        Box::new(move |host: &str, port: u16| {
            names
                .iter()
                .find(|(n, _)| *n == host)
                .map(|(_, ips)| {
                    ips.iter()
                        .map(|i| SocketAddr::new(i.parse().unwrap(), port))
                        .collect()
                })
                .ok_or_else(|| std::io::Error::other("NXDOMAIN"))
        })
    }

    #[test]
    fn urls_are_checked_after_resolution() {
        let resolve = fake(&[
            ("cdn.example", &["93.184.216.34"]),
            ("sneaky.example", &["93.184.216.34", "10.0.0.5"]),
            ("inside.example", &["127.0.0.1"]),
            ("origin.internal", &["10.1.2.3"]),
        ]);
        let default = NetPolicy::default();
        let hls = ["http", "https"];
        let ok = default
            .check("https://cdn.example/live.m3u8", &hls, &resolve)
            .unwrap();
        assert_eq!(ok.host, "cdn.example");
        assert_eq!(ok.addrs, vec!["93.184.216.34:443".parse().unwrap()]);
        let refused = |p: &NetPolicy, url: &str, schemes: &[&str]| {
            p.check(url, schemes, &resolve).unwrap_err()
        };
        assert_eq!(
            refused(&default, "http://inside.example/x.m3u8", &hls),
            Refusal::Address {
                host: "inside.example".into(),
                ip: ip("127.0.0.1"),
                class: AddressClass::Loopback
            }
        );
        // One bad address among good ones refuses the host.
        assert!(matches!(
            refused(&default, "http://sneaky.example/", &hls),
            Refusal::Address {
                class: AddressClass::Private,
                ..
            }
        ));
        assert!(matches!(
            refused(&default, "http://169.254.169.254/latest/meta-data/", &hls),
            Refusal::Address {
                class: AddressClass::Metadata,
                ..
            }
        ));
        assert!(matches!(
            refused(&default, "http://[::ffff:127.0.0.1]:8080/", &hls),
            Refusal::Address {
                class: AddressClass::Loopback,
                ..
            }
        ));
        assert!(matches!(
            refused(&default, "http://nowhere.example/", &hls),
            Refusal::Resolve { .. }
        ));
        for (url, scheme) in [
            ("gopher://cdn.example:6379/_INFO", "gopher"),
            ("file:///etc/passwd", "file"),
            ("tcp://cdn.example:1?listen=1", "tcp"),
            ("rtmp://cdn.example/live/key", "rtmp"),
        ] {
            assert_eq!(
                refused(&default, url, &hls),
                Refusal::Scheme(scheme.into()),
                "{url}"
            );
        }
        assert_eq!(refused(&default, "not a url", &hls), Refusal::Malformed);
        // rtmp gets its default port.
        let rtmp = default
            .check("rtmp://cdn.example/live/key", &["rtmp"], &resolve)
            .unwrap();
        assert_eq!(rtmp.addrs[0].port(), 1935);

        // The operator's allow-list: a range, and a host name.
        let allowing = NetPolicy::new(&["10.0.0.0/8".into(), "Inside.Example".into()]).unwrap();
        allowing
            .check("http://origin.internal/x", &hls, &resolve)
            .unwrap();
        allowing
            .check("http://inside.example/x", &hls, &resolve)
            .unwrap();
        allowing.check("http://10.9.9.9/x", &hls, &resolve).unwrap();
        assert!(matches!(
            refused(&allowing, "http://127.0.0.1/x", &hls),
            Refusal::Address {
                class: AddressClass::Loopback,
                ..
            }
        ));
        // No allow-list entry opens the metadata or unspecified addresses.
        let wide = NetPolicy::new(&[
            "100.64.0.0/10".into(),
            "169.254.0.0/16".into(),
            "0.0.0.0/0".into(),
            "169.254.169.254".into(),
        ])
        .unwrap();
        assert!(wide.permits("carrier", ip("100.64.1.1")));
        assert!(wide.permits("link", ip("169.254.1.1")));
        for bad in ["100.100.100.200", "169.254.169.254", "0.0.0.0"] {
            assert!(!wide.permits(bad, ip(bad)), "{bad}");
        }
        assert!(matches!(
            refused(&wide, "http://169.254.169.254/latest/meta-data/", &hls),
            Refusal::Address {
                class: AddressClass::Metadata,
                ..
            }
        ));
        assert_eq!(
            NetPolicy::new(&["10.0.0.0/99".into(), "a/b".into(), "ok.example".into()]),
            Err(vec!["10.0.0.0/99".to_owned(), "a/b".to_owned()])
        );
    }
}
