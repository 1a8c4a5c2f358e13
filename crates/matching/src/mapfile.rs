//! Files whose arrays are used in place: the matcher snapshot (see
//! [`crate::matcher::Matcher::write_snapshot`]).
//!
//! A file is a 64-byte header, a key (what the contents were made from, so a reader can
//! tell a stale file from the header alone) and a body of fields and arrays. Every array
//! starts on a 64-byte boundary of the file, in the machine's own layout (the header
//! records a byte-order marker; a file from a machine of the other byte order is
//! refused), so once the file is in memory an array is a slice of it: nothing is parsed
//! or rebuilt.
//!
//! ```text
//! header: magic "FBMATCH1" | u32 0x01020304 | u32 key length | u64 body length
//!         | u32 crc32 (IEEE) of key and body | zeros to 64 bytes
//! key:    key length bytes, then zeros to the next 64-byte boundary
//! body:   u8 / u32 / u64 little fields, str = u32 length + UTF-8,
//!         array = u64 count, zeros to the next 64-byte boundary, count x element
//! ```
//!
//! Before anything in a file is used, its length is checked against the header and the
//! checksum over all of it: a truncated or damaged file is an error, never a fault.
//! The readers of each structure then check what their queries rely on (offsets in
//! range, counts consistent), so even a file made to pass the checksum cannot make a
//! query index out of bounds.
//!
//! Two ways to bring a file into memory ([`LoadMode`]): read it into the heap (one copy,
//! immune to what happens to the file afterwards), or map it (no copy, and several
//! processes on one machine share one copy in the page cache; but a mapped file that
//! something else truncates later faults on access, which is why reading is the default).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The file magic.
const MAGIC: &[u8; 8] = b"FBMATCH1";
/// Written as a native `u32`: read back as another value on a machine of the other
/// byte order.
const ORDER: u32 = 0x0102_0304;
/// Header bytes; sections after it are aligned to this.
const ALIGN: usize = 64;
/// The longest key accepted.
const MAX_KEY: usize = 1 << 20;

/// How a snapshot is brought into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadMode {
    /// Read into the heap (the default: nothing that happens to the file later can
    /// affect the process).
    #[default]
    Read,
    /// Map the file (no copy; processes on one machine share the page cache's copy).
    /// A file truncated by something else while mapped faults the process: use it only
    /// where nothing but Firebreak writes the banks directory (Firebreak itself
    /// replaces files by renaming, which leaves a mapped file intact).
    Map,
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading failed.
    #[error("reading: {0}")]
    Io(#[from] io::Error),
    /// Not a snapshot of this version.
    #[error("not a matcher snapshot of this version (bad magic)")]
    Magic,
    /// Written on a machine of the other byte order.
    #[error("written on a machine of another byte order")]
    ByteOrder,
    /// Shorter or longer than its header says.
    #[error("truncated or extended: {actual} bytes where the header says {expected}")]
    Length {
        /// Bytes the header accounts for.
        expected: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// The checksum does not match.
    #[error("damaged: checksum {actual:08x}, expected {expected:08x}")]
    Checksum {
        /// From the header.
        expected: u32,
        /// Computed.
        actual: u32,
    },
    /// The contents are inconsistent.
    #[error("inconsistent: {0}")]
    Invalid(String),
}

/// An invalid-contents error.
pub(crate) fn invalid(what: impl Into<String>) -> FileError {
    FileError::Invalid(what.into())
}

/// Plain old data: any bit pattern is a valid value, there is no padding, and the
/// alignment is at most [`ALIGN`].
///
/// # Safety
/// Only for types for which all of the above holds.
#[allow(unsafe_code)]
pub(crate) unsafe trait Pod: Copy + Send + Sync + 'static {}

// SAFETY: integers and arrays of them: every bit pattern valid, no padding.
#[allow(unsafe_code)]
unsafe impl Pod for u8 {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Pod for u32 {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Pod for u64 {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Pod for [u64; 2] {}

/// A 64-byte-aligned block of the heap copy.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line([u8; ALIGN]);

/// A whole file in memory.
pub(crate) enum Backing {
    Heap { lines: Vec<Line>, len: usize },
    Map(memmap2::Mmap),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: `Line` is `len`-covering plain bytes: the vector holds at least
            // `len` initialised bytes (checked where it is made).
            #[allow(unsafe_code)]
            Backing::Heap { lines, len } => unsafe {
                std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), *len)
            },
            Backing::Map(m) => m,
        }
    }
}

/// An array: owned, or a slice of a file in memory.
#[derive(Clone)]
pub(crate) enum Store<T: Pod> {
    /// Built in this process.
    Owned(Vec<T>),
    /// `len` elements at `ptr`, inside a loaded file (in bounds and aligned: checked
    /// by [`Reader::array`], the only place that makes one). The pointer is kept
    /// rather than an offset so that reading an element costs what it does in a
    /// vector: no hop through the file's handle.
    Shared {
        ptr: *const T,
        len: usize,
        /// Keeps the bytes alive.
        _file: Arc<Backing>,
    },
}

// SAFETY: a shared store only reads bytes that its `Arc` keeps alive and that nothing
// writes, so it may move to and be read from any thread, as a `Vec<T>` may.
#[allow(unsafe_code)]
unsafe impl<T: Pod> Send for Store<T> {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl<T: Pod> Sync for Store<T> {}

impl<T: Pod> Default for Store<T> {
    fn default() -> Self {
        Store::Owned(Vec::new())
    }
}

impl<T: Pod> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Store::Owned(_) => "owned",
            Store::Shared { .. } => "shared",
        };
        write!(f, "Store({kind}, {} elements)", self.len())
    }
}

impl<T: Pod> From<Vec<T>> for Store<T> {
    fn from(v: Vec<T>) -> Self {
        Store::Owned(v)
    }
}

impl<T: Pod> std::ops::Deref for Store<T> {
    type Target = [T];

    #[inline(always)]
    fn deref(&self) -> &[T] {
        match self {
            Store::Owned(v) => v,
            // SAFETY: `Reader::array` checked that the `len * size_of::<T>()` bytes at
            // `ptr` lie in the file's bytes and that `ptr` is aligned for `T`; `T: Pod`
            // accepts any bytes; the `Arc` keeps the bytes alive (a heap copy never
            // moves, a mapping never unmaps while held) and they are never written.
            #[allow(unsafe_code)]
            Store::Shared { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl<T: Pod> Store<T> {
    /// The owned vector, copied out of the file first if it is shared.
    pub(crate) fn to_mut(&mut self) -> &mut Vec<T> {
        if let Store::Shared { .. } = self {
            *self = Store::Owned(self.to_vec());
        }
        match self {
            Store::Owned(v) => v,
            Store::Shared { .. } => unreachable!("made owned just above"),
        }
    }

    /// Bytes of memory it occupies (a shared array's bytes are the file's).
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Store::Owned(v) => v.capacity() * std::mem::size_of::<T>(),
            Store::Shared { len, .. } => len * std::mem::size_of::<T>(),
        }
    }

    /// Gives back unused capacity.
    pub(crate) fn shrink_to_fit(&mut self) {
        if let Store::Owned(v) = self {
            v.shrink_to_fit();
        }
    }
}

fn as_bytes<T: Pod>(items: &[T]) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so every byte of the slice is initialised.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts(items.as_ptr().cast::<u8>(), std::mem::size_of_val(items))
    }
}

/// Writes a body, counting its bytes and checksumming them.
pub(crate) struct Writer<W: Write> {
    out: W,
    /// Bytes written from the start of the file.
    at: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Writer<W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.at += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (ALIGN as u64 - self.at % ALIGN as u64) % ALIGN as u64;
        self.raw(&[0u8; ALIGN][..pad as usize])
    }

    pub(crate) fn u8(&mut self, v: u8) -> io::Result<()> {
        self.raw(&[v])
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> io::Result<()> {
        self.raw(v)
    }

    pub(crate) fn u32(&mut self, v: u32) -> io::Result<()> {
        self.raw(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> io::Result<()> {
        self.raw(&v.to_le_bytes())
    }

    pub(crate) fn str(&mut self, s: &str) -> io::Result<()> {
        let len = u32::try_from(s.len()).map_err(|_| io::Error::other("string over 4 GiB"))?;
        self.u32(len)?;
        self.raw(s.as_bytes())
    }

    /// A count and the elements, aligned.
    pub(crate) fn array<T: Pod>(&mut self, items: &[T]) -> io::Result<()> {
        self.u64(items.len() as u64)?;
        self.pad()?;
        // In pieces, so a big array is not one huge write call.
        for chunk in as_bytes(items).chunks(1 << 24) {
            self.raw(chunk)?;
        }
        Ok(())
    }
}

/// Writes a snapshot to `path` atomically and durably: a temporary file beside it
/// (unique to this process), synced, then renamed over `path`; `body` writes the body.
pub(crate) fn write_file(
    path: &Path,
    key: &[u8],
    body: impl FnOnce(&mut Writer<&mut io::BufWriter<File>>) -> io::Result<()>,
) -> io::Result<()> {
    use std::io::{Seek, SeekFrom};
    if key.len() > MAX_KEY {
        return Err(io::Error::other("snapshot key too long"));
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut file = io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        file.write_all(&[0u8; ALIGN])?;
        let (crc, body_len) = {
            let mut w = Writer {
                out: &mut file,
                at: ALIGN as u64,
                crc: crc32fast::Hasher::new(),
            };
            w.raw(key)?;
            w.pad()?;
            let body_start = w.at;
            body(&mut w)?;
            (w.crc.finalize(), w.at - body_start)
        };
        let mut file = file.into_inner().map_err(|e| e.into_error())?;
        let mut header = [0u8; ALIGN];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&ORDER.to_ne_bytes());
        header[12..16].copy_from_slice(&(key.len() as u32).to_le_bytes());
        header[16..24].copy_from_slice(&body_len.to_le_bytes());
        header[24..28].copy_from_slice(&crc.to_le_bytes());
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A parsed header.
struct Header {
    key_len: usize,
    body_len: u64,
    crc: u32,
}

impl Header {
    fn parse(bytes: &[u8; ALIGN]) -> Result<Header, FileError> {
        if &bytes[..8] != MAGIC {
            return Err(FileError::Magic);
        }
        if u32::from_ne_bytes(bytes[8..12].try_into().expect("4")) != ORDER {
            return Err(FileError::ByteOrder);
        }
        let key_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4")) as usize;
        if key_len > MAX_KEY {
            return Err(invalid(format!("key of {key_len} bytes")));
        }
        Ok(Header {
            key_len,
            body_len: u64::from_le_bytes(bytes[16..24].try_into().expect("8")),
            crc: u32::from_le_bytes(bytes[24..28].try_into().expect("4")),
        })
    }

    /// Where the body starts.
    fn body_start(&self) -> usize {
        (ALIGN + self.key_len).next_multiple_of(ALIGN)
    }

    fn total(&self) -> Option<u64> {
        (self.body_start() as u64).checked_add(self.body_len)
    }
}

/// The key of the snapshot at `path`, read from its start only (its checksum is not
/// checked here: [`load`] does that).
pub(crate) fn read_key(path: &Path) -> Result<Vec<u8>, FileError> {
    let mut file = File::open(path)?;
    let actual = file.metadata()?.len();
    let short = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => FileError::Length {
            expected: ALIGN as u64,
            actual,
        },
        _ => FileError::Io(e),
    };
    let mut head = [0u8; ALIGN];
    file.read_exact(&mut head).map_err(short)?;
    let header = Header::parse(&head)?;
    let mut key = vec![0u8; header.key_len];
    file.read_exact(&mut key).map_err(short)?;
    Ok(key)
}

/// A loaded, checked file.
pub(crate) struct Loaded {
    file: Arc<Backing>,
    key: std::ops::Range<usize>,
    body: usize,
}

impl Loaded {
    /// The key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.file.bytes()[self.key.clone()]
    }

    /// A reader at the start of the body.
    pub(crate) fn reader(&self) -> Reader {
        Reader {
            file: self.file.clone(),
            at: self.body,
        }
    }
}

/// Loads the file at `path` and checks its length and checksum.
pub(crate) fn load(path: &Path, mode: LoadMode) -> Result<Loaded, FileError> {
    let mut file = File::open(path)?;
    let actual = file.metadata()?.len();
    let mut head = [0u8; ALIGN];
    file.read_exact(&mut head).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FileError::Length {
            expected: ALIGN as u64,
            actual,
        },
        _ => FileError::Io(e),
    })?;
    let header = Header::parse(&head)?;
    let expected = header.total().ok_or_else(|| invalid("body length"))?;
    if expected != actual {
        return Err(FileError::Length { expected, actual });
    }
    let len = usize::try_from(actual).map_err(|_| invalid("larger than the address space"))?;
    let backing = match mode {
        LoadMode::Read => {
            let lines = read_whole(&file, len)?;
            let backing = Backing::Heap { lines, len };
            // What was checked above is what was read.
            if backing.bytes()[..ALIGN] != head {
                return Err(invalid("the file changed while it was read"));
            }
            // The file may have grown between the size check and the read.
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(actual))?;
            if file.read(&mut [0u8; 1])? != 0 {
                return Err(invalid("the file grew while it was read"));
            }
            backing
        }
        LoadMode::Map => {
            // SAFETY: the mapping is only read. Its length was checked against the file
            // just above; a file truncated by another process afterwards would fault on
            // access, which `LoadMode::Map`'s documentation warns of (Firebreak only
            // ever replaces snapshots by renaming).
            #[allow(unsafe_code)]
            let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file)? };
            #[cfg(target_os = "linux")]
            let _ = map.advise(memmap2::Advice::WillNeed);
            Backing::Map(map)
        }
    };
    let bytes = backing.bytes();
    let crc = checksum(&bytes[ALIGN..]);
    if crc != header.crc {
        return Err(FileError::Checksum {
            expected: header.crc,
            actual: crc,
        });
    }
    Ok(Loaded {
        key: ALIGN..ALIGN + header.key_len,
        body: header.body_start(),
        file: Arc::new(backing),
    })
}

/// The first `len` bytes of `file` (from its start), in 64-byte-aligned memory backed
/// by huge pages where available, zero-padded to whole lines.
///
/// The memory is not zeroed first: at a gigabyte, zeroing cost about as much as the
/// read itself. The bytes are read into the uninitialised allocation with `pread`, which
/// takes a raw pointer.
#[cfg(target_os = "linux")]
fn read_whole(file: &File, len: usize) -> io::Result<Vec<Line>> {
    use std::os::fd::AsRawFd;
    let n = len.div_ceil(ALIGN);
    let mut lines: Vec<Line> = Vec::with_capacity(n);
    crate::index::advise_huge(&lines);
    let base = lines.as_mut_ptr().cast::<u8>();
    let mut done = 0usize;
    while done < len {
        let want = (len - done).min(1 << 30);
        let at = libc::off_t::try_from(done).map_err(io::Error::other)?;
        // SAFETY: `base + done .. base + done + want` lies inside the allocation of
        // `n * ALIGN >= len` bytes; `pread` only writes there.
        #[allow(unsafe_code)]
        let got = unsafe { libc::pread(file.as_raw_fd(), base.add(done).cast(), want, at) };
        match got {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was read",
                ));
            }
            g if g < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            g => done += g as usize,
        }
    }
    // SAFETY: bytes `0..len` were written by `pread` above and the rest of the last line
    // is zeroed here, so all `n` lines are initialised.
    #[allow(unsafe_code)]
    unsafe {
        base.add(len).write_bytes(0, n * ALIGN - len);
        lines.set_len(n);
    }
    Ok(lines)
}

/// The first `len` bytes of `file`, zero-padded to whole lines (the portable version).
#[cfg(not(target_os = "linux"))]
fn read_whole(file: &File, len: usize) -> io::Result<Vec<Line>> {
    use std::io::{Seek, SeekFrom};
    let mut lines = vec![Line([0; ALIGN]); len.div_ceil(ALIGN)];
    // SAFETY: `Line` is plain bytes; the slice covers `len` of the vector's
    // `lines.len() * ALIGN >= len` bytes.
    #[allow(unsafe_code)]
    let bytes = unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), len) };
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(bytes)?;
    Ok(lines)
}

/// CRC-32 of `bytes`, computed on two threads for a big file.
fn checksum(bytes: &[u8]) -> u32 {
    const SPLIT: usize = 64 << 20;
    if bytes.len() < SPLIT {
        let mut h = crc32fast::Hasher::new();
        h.update(bytes);
        return h.finalize();
    }
    let (a, b) = bytes.split_at(bytes.len() / 2);
    let (mut first, second) = std::thread::scope(|s| {
        let second = s.spawn(|| {
            let mut h = crc32fast::Hasher::new();
            h.update(b);
            h
        });
        let mut h = crc32fast::Hasher::new();
        h.update(a);
        (h, second.join().expect("checksum thread"))
    });
    first.combine(&second);
    first.finalize()
}

/// Reads a body in order.
pub(crate) struct Reader {
    file: Arc<Backing>,
    at: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<&[u8], FileError> {
        let bytes = self.file.bytes();
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| invalid("a field runs past the end"))?;
        let out = &bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FileError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn fixed<const N: usize>(&mut self) -> Result<[u8; N], FileError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FileError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FileError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    /// A count that is at most `max`.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize, FileError> {
        let n = self.u64()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| invalid(format!("count {n} where at most {max} fit")))
    }

    pub(crate) fn str(&mut self) -> Result<String, FileError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?)
            .map(str::to_owned)
            .map_err(|_| invalid("a string is not UTF-8"))
    }

    /// An array written by [`Writer::array`], in place.
    pub(crate) fn array<T: Pod>(&mut self) -> Result<Store<T>, FileError> {
        let len = self.count(usize::MAX)?;
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| invalid("array length"))?;
        self.take((ALIGN - self.at % ALIGN) % ALIGN)?;
        let at = self.at;
        self.take(bytes)?;
        // Sections are 64-byte aligned in the file, and the file's first byte is at
        // least that aligned in memory (a `Line` vector, or a page-aligned mapping).
        let ptr = self.file.bytes()[at..].as_ptr();
        if !(ptr as usize).is_multiple_of(std::mem::align_of::<T>()) {
            return Err(invalid("misaligned array"));
        }
        Ok(Store::Shared {
            ptr: ptr.cast::<T>(),
            len,
            _file: self.file.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUES: usize = 1000;

    /// A file with a key, a few fields and an array; returns its path and length.
    fn sample(dir: &Path) -> (std::path::PathBuf, u64) {
        let path = dir.join("sample.fmatch");
        let values: Vec<u64> = (0..VALUES as u64).map(|i| i * 3 + 1).collect();
        write_file(&path, b"the key", |w| {
            w.u32(7)?;
            w.str("héllo")?;
            w.array(&values)?;
            w.u8(9)
        })
        .unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        (path, len)
    }

    fn read_sample(path: &Path, mode: LoadMode) -> Result<(u32, String, Vec<u64>, u8), FileError> {
        let loaded = load(path, mode)?;
        assert_eq!(loaded.key(), b"the key");
        let mut r = loaded.reader();
        let n = r.u32()?;
        let s = r.str()?;
        let a: Store<u64> = r.array()?;
        assert!(matches!(a, Store::Shared { .. }), "used in place");
        Ok((n, s, a.to_vec(), r.u8()?))
    }

    #[test]
    fn a_file_reads_back_in_place_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, len) = sample(dir.path());
        // Header, key padded to 64, u32 + str (4 + 6) + count (8) padded to 64, the
        // array, one byte.
        assert_eq!(len, 64 + 64 + 64 + VALUES as u64 * 8 + 1);
        assert_eq!(read_key(&path).unwrap(), b"the key");
        for mode in [LoadMode::Read, LoadMode::Map] {
            let (n, s, a, last) = read_sample(&path, mode).unwrap();
            assert_eq!((n, s.as_str(), last), (7, "héllo", 9));
            assert_eq!(a, (0..VALUES as u64).map(|i| i * 3 + 1).collect::<Vec<_>>());
        }
    }

    #[test]
    fn truncated_extended_and_damaged_files_are_refused_in_both_modes() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [LoadMode::Read, LoadMode::Map] {
            let (path, len) = sample(dir.path());
            let good = std::fs::read(&path).unwrap();
            for cut in [0, 1, 63, 64, 100, 191, 192, len / 2, len - 1] {
                std::fs::write(&path, &good[..cut as usize]).unwrap();
                match read_sample(&path, mode) {
                    Err(FileError::Length { expected, actual }) => {
                        assert_eq!(actual, cut, "{mode:?} cut {cut}");
                        assert!(expected > actual);
                    }
                    other => panic!("{mode:?} cut at {cut}: {other:?}"),
                }
            }
            let mut longer = good.clone();
            longer.push(0);
            std::fs::write(&path, &longer).unwrap();
            assert!(matches!(
                read_sample(&path, mode),
                Err(FileError::Length { expected, actual }) if expected == len && actual == len + 1
            ));
            // One flipped bit anywhere after the header: key, fields, padding, array.
            for at in [
                64,
                70,
                128,
                140,
                190,
                200,
                len as usize / 2,
                len as usize - 1,
            ] {
                let mut bad = good.clone();
                bad[at] ^= 0x10;
                std::fs::write(&path, &bad).unwrap();
                assert!(
                    matches!(read_sample(&path, mode), Err(FileError::Checksum { .. })),
                    "{mode:?} flip at {at}"
                );
            }
            let mut bad = good.clone();
            bad[0] = b'X';
            std::fs::write(&path, &bad).unwrap();
            assert!(matches!(read_sample(&path, mode), Err(FileError::Magic)));
            let mut bad = good.clone();
            bad[8..12].reverse();
            std::fs::write(&path, &bad).unwrap();
            assert!(matches!(
                read_sample(&path, mode),
                Err(FileError::ByteOrder)
            ));
        }
    }

    /// Counts and lengths that run past the end of a file (one made to pass its
    /// checksum) are errors, not panics or reads out of bounds.
    #[test]
    fn counts_past_the_end_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crafted.fmatch");
        for (count, what) in [
            (u64::MAX, "array length"),
            (u64::MAX / 8 + 1, "array length"),
            (1 << 40, "runs past the end"),
            (2, "runs past the end"),
        ] {
            write_file(&path, b"", |w| {
                w.u64(count)?;
                w.u64(5)
            })
            .unwrap();
            let loaded = load(&path, LoadMode::Read).unwrap();
            let err = loaded.reader().array::<u64>().map(|a| a.len()).unwrap_err();
            assert!(err.to_string().contains(what), "{count}: {err}");
        }
        write_file(&path, b"", |w| w.u32(u32::MAX)).unwrap();
        let loaded = load(&path, LoadMode::Map).unwrap();
        assert!(loaded.reader().str().is_err());
        write_file(&path, b"", |w| w.bytes(&[0xFF, 0xFE, 0, 0, 0])).unwrap();
        let loaded = load(&path, LoadMode::Map).unwrap();
        let mut r = loaded.reader();
        assert!(r.u64().is_err(), "five bytes are not a u64");
    }

    #[test]
    fn a_shared_array_becomes_owned_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sample(dir.path());
        let loaded = load(&path, LoadMode::Map).unwrap();
        let mut r = loaded.reader();
        r.u32().unwrap();
        r.str().unwrap();
        let mut a: Store<u64> = r.array().unwrap();
        drop(loaded);
        a.to_mut().push(5);
        assert!(matches!(a, Store::Owned(_)));
        assert_eq!(a.len(), VALUES + 1);
        assert_eq!(
            (a[0], a[VALUES - 1], a[VALUES]),
            (1, 3 * (VALUES as u64 - 1) + 1, 5)
        );
    }
}
