//! Query-side views (`[detectors.views]`): which views of each sampled frame are hashed
//! and matched, and, per bank, which of them may match that bank's entries.
//!
//! A bank made by `firebreak lists add-video` holds views of the original (centre
//! crops, the frame without bars) beside its whole frames; a hash list shared between
//! platforms or a coordinator's bank holds whole frames only. The query-side views
//! (dihedral transforms for mirrored and rotated copies, the frame without bars, a centre
//! view for picture-in-picture) are what helps the latter, and each costs CPU and some
//! false-match risk, so they are switchable per bank.

use std::collections::BTreeMap;

use firebreak_hashing::views::{Corner, Region, ViewHash, ViewSpec};
use serde::Deserialize;

/// One set of query views.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewSet {
    /// Match the frame's eight dihedral transforms (mirrored, rotated copies).
    pub dihedral: bool,
    /// Match the frame without its letterbox/pillarbox bars.
    pub trim_bars: bool,
    /// Centre views, by percent of each dimension (for example `[60]` for
    /// picture-in-picture copies); each from 10 to 99.
    pub centres: Vec<u8>,
    /// Masked views: for each percent (10 to 60), the frame (without its bars) four
    /// times, each time with the block of that share of each dimension at one corner
    /// masked (a logo, a channel bug), as it is and, with `dihedral`, mirrored. They
    /// match banks holding the same masked views (`lists add-video` banks `noCP`).
    pub masked: Vec<u8>,
}

impl Default for ViewSet {
    fn default() -> Self {
        ViewSet {
            dihedral: true,
            trim_bars: true,
            centres: vec![60],
            masked: vec![50],
        }
    }
}

impl ViewSet {
    /// The whole frame only (what Firebreak matched before views).
    pub fn plain() -> ViewSet {
        ViewSet {
            dihedral: false,
            trim_bars: false,
            centres: Vec::new(),
            masked: Vec::new(),
        }
    }

    fn allows(&self, v: &ViewHash) -> bool {
        (v.transform == 0 || self.dihedral)
            && match v.region {
                Region::Full => true,
                Region::Trimmed => self.trim_bars,
                Region::Centre(p) => self.centres.contains(&p),
                Region::Masked { base, percent, .. } => {
                    base == 100 && self.masked.contains(&percent)
                }
                // Corner views are banked (off-centre crops), not queried.
                Region::Corner(..) => false,
            }
    }
}

/// `[detectors.views]`: the default query views and per-bank overrides
/// (`[detectors.views.banks.NAME]`, each a whole [`ViewSet`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ViewsConfig {
    /// Default: match the frame's dihedral transforms.
    pub dihedral: bool,
    /// Default: match the frame without its bars.
    pub trim_bars: bool,
    /// Default: centre views, by percent.
    pub centres: Vec<u8>,
    /// Default: masked corners, by percent.
    pub masked: Vec<u8>,
    /// Overrides by bank name.
    pub banks: BTreeMap<String, ViewSet>,
}

impl Default for ViewsConfig {
    fn default() -> Self {
        let d = ViewSet::default();
        ViewsConfig {
            dihedral: d.dihedral,
            trim_bars: d.trim_bars,
            centres: d.centres,
            masked: d.masked,
            banks: BTreeMap::new(),
        }
    }
}

impl ViewsConfig {
    /// Every problem, as (path, message).
    pub fn issues(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut check = |path: String, set: &ViewSet| {
            for (i, p) in set.centres.iter().enumerate() {
                if !(10..100).contains(p) {
                    out.push((format!("{path}.centres[{i}]"), "must be 10 to 99".into()));
                }
            }
            for (i, p) in set.masked.iter().enumerate() {
                if !(10..=firebreak_hashing::views::MAX_MASK).contains(p) {
                    out.push((
                        format!("{path}.masked[{i}]"),
                        format!("must be 10 to {}", firebreak_hashing::views::MAX_MASK),
                    ));
                }
            }
        };
        check("detectors.views".into(), &self.default_set());
        for (name, set) in &self.banks {
            check(format!("detectors.views.banks.{name}"), set);
        }
        out
    }

    /// Only the whole frame, for every bank.
    pub fn plain() -> ViewsConfig {
        ViewsConfig::uniform(ViewSet::plain())
    }

    /// The same views for every bank.
    pub fn uniform(set: ViewSet) -> ViewsConfig {
        ViewsConfig {
            dihedral: set.dihedral,
            trim_bars: set.trim_bars,
            centres: set.centres,
            masked: set.masked,
            banks: BTreeMap::new(),
        }
    }

    /// The views of banks without an override.
    pub fn default_set(&self) -> ViewSet {
        ViewSet {
            dihedral: self.dihedral,
            trim_bars: self.trim_bars,
            centres: self.centres.clone(),
            masked: self.masked.clone(),
        }
    }

    /// What to hash of each frame: the union of every bank's views.
    pub fn spec(&self) -> ViewSpec {
        let d = self.default_set();
        let sets = || std::iter::once(&d).chain(self.banks.values());
        let mut centres: Vec<u8> = sets().flat_map(|s| s.centres.iter().copied()).collect();
        centres.sort_unstable();
        centres.dedup();
        let mut masked: Vec<u8> = sets().flat_map(|s| s.masked.iter().copied()).collect();
        masked.sort_unstable();
        masked.dedup();
        ViewSpec {
            trim_bars: sets().any(|s| s.trim_bars),
            centres,
            corners: Vec::new(),
            dihedral: sets().any(|s| s.dihedral),
            masks: masked
                .iter()
                .flat_map(|&p| Corner::ALL.map(|c| (100, c, p)))
                .collect(),
        }
    }

    /// Whether a match of view `v` against an entry of `bank` counts.
    pub fn allows(&self, bank: &str, v: &ViewHash) -> bool {
        match self.banks.get(bank) {
            Some(set) => set.allows(v),
            None => self.default_set().allows(v),
        }
    }
}

/// A [`ViewsConfig`] with the hashing spec it implies, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryViews {
    /// The configuration.
    pub config: ViewsConfig,
    /// What to hash of each frame.
    pub spec: ViewSpec,
}

impl QueryViews {
    /// Prepares `config`.
    pub fn new(config: ViewsConfig) -> QueryViews {
        QueryViews {
            spec: config.spec(),
            config,
        }
    }
}

impl Default for QueryViews {
    fn default() -> Self {
        QueryViews::new(ViewsConfig::default())
    }
}

/// The evidence's `view`: `None` for the whole frame against a whole banked frame,
/// else the frame's view and, after `~`, the entry's view (the part of its id after
/// `@`, as `lists add-video` names view entries).
pub fn label(v: &ViewHash, entry_id: &str) -> Option<String> {
    let banked = entry_id.rsplit_once('@').map(|(_, view)| view);
    match (v.region == Region::Full && v.transform == 0, banked) {
        (true, None) => None,
        (_, None) => Some(v.name()),
        (_, Some(b)) => Some(format!("{}~{b}", v.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_hashing::Hash256;

    fn view(region: Region, transform: u8) -> ViewHash {
        ViewHash {
            region,
            transform,
            hash: Hash256::ZERO,
            quality: 100,
        }
    }

    #[test]
    fn a_bank_override_switches_views_off_for_that_bank_only() {
        let config: ViewsConfig = toml::from_str(
            "dihedral = true\ncentres = [60]\n[banks.gifct]\ndihedral = false\ncentres = []\n",
        )
        .unwrap();
        let flipped = view(Region::Full, 4);
        let centre = view(Region::Centre(60), 0);
        assert!(config.allows("crisis", &flipped));
        assert!(config.allows("crisis", &centre));
        assert!(!config.allows("gifct", &flipped));
        assert!(!config.allows("gifct", &centre));
        assert!(config.allows("gifct", &view(Region::Full, 0)));
        assert_eq!(
            config.spec(),
            ViewSpec {
                trim_bars: true,
                centres: vec![60],
                corners: Vec::new(),
                dihedral: true,
                masks: Corner::ALL.map(|c| (100, c, 50)).to_vec(),
            }
        );
    }

    #[test]
    fn masked_views_are_queried_by_percent_per_bank() {
        let config: ViewsConfig = toml::from_str(
            "masked = [40]\n[banks.gifct]\nmasked = []\n[banks.other]\nmasked = [45]\n",
        )
        .unwrap();
        let masked = |base, percent, transform| {
            view(
                Region::Masked {
                    base,
                    corner: Corner::BottomLeft,
                    percent,
                },
                transform,
            )
        };
        assert!(config.allows("crisis", &masked(100, 40, 0)));
        assert!(config.allows("crisis", &masked(100, 40, firebreak_hashing::views::MIRROR)));
        assert!(!config.allows("crisis", &masked(100, 45, 0)));
        assert!(!config.allows("crisis", &masked(90, 40, 0)));
        assert!(!config.allows("gifct", &masked(100, 40, 0)));
        assert!(config.allows("other", &masked(100, 45, 0)));
        let spec = config.spec();
        assert_eq!(spec.masks.len(), 8);
        assert!(spec.masks.contains(&(100, Corner::TopRight, 45)));
        let bad: ViewsConfig = toml::from_str("masked = [9, 40, 61]").unwrap();
        assert_eq!(
            bad.issues(),
            [
                (
                    "detectors.views.masked[0]".to_string(),
                    "must be 10 to 60".to_string()
                ),
                (
                    "detectors.views.masked[2]".to_string(),
                    "must be 10 to 60".to_string()
                )
            ]
        );
    }

    fn pdq_bank(
        name: &str,
        negative: bool,
        id: &str,
        hash: Hash256,
    ) -> firebreak_matching::bank::Bank {
        use firebreak_matching::lists::{Record, Signal};
        let mut b = firebreak_matching::bank::Bank::new(name, negative);
        b.import(
            vec![Record {
                line: 1,
                id: Some(id.into()),
                signal: Signal::Pdq {
                    hash,
                    quality: Some(100),
                },
                labels: Vec::new(),
                delete: false,
            }],
            Vec::new(),
            firebreak_matching::bank::ImportPolicy::default(),
        );
        b
    }

    /// A centre view matches a banked centre view and names both views; the same
    /// frame known benign as a whole (its whole view matches a negative entry) matches
    /// through no view; with views switched off, only the whole frame is matched.
    #[test]
    fn a_view_match_names_the_view_unless_the_whole_frame_is_known_benign() {
        use crate::engine::detect::match_views;
        use firebreak_matching::matcher::{MatchConfig, Matcher};
        let (whole, centre) = (
            Hash256::from_limbs([!0, !0, 0, 0]),
            Hash256::from_limbs([0, 0, !0, !0]),
        );
        let mut frame = vec![view(Region::Full, 0), view(Region::Centre(60), 0)];
        frame[0].hash = whole;
        frame[1].hash = centre;
        let views = QueryViews::default();
        let positive = pdq_bank("crisis", false, "clip/f3@centre60", centre);
        let matcher = Matcher::new([&positive], MatchConfig::default(), 1);
        let hits = match_views(&matcher, &views, &frame, None);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].entry_id, "clip/f3@centre60");
        assert_eq!(hits[0].view.as_deref(), Some("centre60~centre60"));
        let negative = pdq_bank("benign", true, "ok", whole);
        let matcher = Matcher::new([&positive, &negative], MatchConfig::default(), 1);
        assert!(match_views(&matcher, &views, &frame, None).is_empty());
        let plain = QueryViews::new(ViewsConfig::plain());
        let matcher = Matcher::new([&positive], MatchConfig::default(), 1);
        assert!(match_views(&matcher, &plain, &frame, None).is_empty());
    }

    #[test]
    fn labels_name_the_frame_view_and_the_banked_view() {
        assert_eq!(label(&view(Region::Full, 0), "clip/f12"), None);
        assert_eq!(
            label(&view(Region::Full, 4), "clip/f12").as_deref(),
            Some("full/flipx")
        );
        assert_eq!(
            label(&view(Region::Full, 0), "clip/f12@centre90").as_deref(),
            Some("full~centre90")
        );
    }

    #[test]
    fn centres_out_of_range_are_reported() {
        let config: ViewsConfig = toml::from_str("centres = [5, 60]").unwrap();
        assert_eq!(config.issues().len(), 1);
    }
}
