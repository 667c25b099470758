//! Read-only shared mappings of journal files, and the SIGBUS guard that makes reading
//! them as safe as `pread`.
//!
//! Why map at all: through `pread`, every 64 KiB block is copied out of the page cache
//! first; on the 1M-entry bench journal that copy and its system calls were 0.20 of the
//! reader's 0.82 CPU s (`examples/reader_scan`, alternating runs, #32). A mapping reads the
//! page cache in place.
//!
//! The danger: a file can be truncated under its mapping (systemd 252's journald truncates
//! the files it archives, systemd#24320; anyone who can write a file the agent reads can
//! cut it), and touching a page past the new end raises SIGBUS, which kills the process.
//!
//! The guard: a SIGBUS handler that, for an address inside one of the mappings registered
//! here, maps a page of zeros over the faulting page and marks the mapping faulted. The
//! read that faulted sees zeros: bytes the reader already survives from a hostile file
//! (every offset and size it reads is checked). The window then drops the mapping and reads
//! through `pread`, which reports the file's real end. A SIGBUS at any other address goes
//! to whatever handled it before (by default the process dies, as without the guard).
//!
//! Owns every `unsafe` of the native reader. Invariants:
//! - A registered range is always a live mapping made here: a slot is cleared before its
//!   mapping is unmapped, and filled only after the mapping exists.
//! - The handler only reads the registry and replaces pages inside registered ranges.
//! - The bytes of a mapping may change while a slice of them is held (a writer appends or
//!   links entries, or a page becomes zeros): callers treat them as untrusted, and every
//!   slice is bounded by the mapping's length, which is ours, never the file's.

use std::ffi::c_void;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Mappings the guard can watch at once: every open journal file has one (a collector of
/// many hosts opens many). A file past this is read through `pread`.
const SLOTS: usize = 4096;

struct Slot {
    owned: AtomicBool,
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

static REGISTRY: [Slot; SLOTS] = [const {
    Slot {
        owned: AtomicBool::new(false),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        faulted: AtomicBool::new(false),
    }
}; SLOTS];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// SIGBUS's disposition before the guard, restored for a fault that is not ours.
struct Previous(libc::sigaction);
static PREVIOUS: std::sync::OnceLock<Previous> = std::sync::OnceLock::new();

fn install() -> bool {
    INSTALL.call_once(|| {
        // safety: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // safety: zeroed is a valid `sigaction` (no handler, empty mask); the calls are
        // given valid pointers to it. The previous disposition is stored before ours is set.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                return;
            }
            let _ = PREVIOUS.set(Previous(previous));
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            libc::sigemptyset(&mut ours.sa_mask);
            if libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut()) == 0 {
                INSTALLED.store(true, Ordering::Release);
            }
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // safety: with SA_SIGINFO the kernel passes a valid siginfo for this signal.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == libc::BUS_ADRERR {
        for s in &REGISTRY {
            let start = s.start.load(Ordering::Acquire);
            if start == 0 || addr < start || addr - start >= s.len.load(Ordering::Acquire) {
                continue;
            }
            let page = addr & !(PAGE.load(Ordering::Relaxed) - 1);
            // safety: the page lies inside a live mapping made by this module (the
            // registry's invariant); replacing it with zeros changes only what reads of
            // that mapping see. mmap is async-signal-safe.
            let p = unsafe {
                libc::mmap(
                    page as *mut c_void,
                    PAGE.load(Ordering::Relaxed),
                    libc::PROT_READ,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                s.faulted.store(true, Ordering::Release);
                return;
            }
        }
    }
    // Not ours: the previous disposition takes the signal when the access faults again.
    if let Some(Previous(previous)) = PREVIOUS.get() {
        // safety: a valid sigaction saved at install; sigaction is async-signal-safe.
        unsafe { libc::sigaction(libc::SIGBUS, previous, std::ptr::null_mut()) };
    }
}

/// A read-only shared mapping of a file's first `len` bytes, watched by the guard.
pub(super) struct Map {
    ptr: *const u8,
    len: usize,
    slot: usize,
}

// safety: the mapping is read-only and owned by this value; moving it to another thread
// moves the only handle to it.
unsafe impl Send for Map {}

impl Map {
    /// Maps the file's first `len` bytes, or `None` (an empty file, no slot left, the guard
    /// could not be installed, or the kernel refused): the caller then uses `pread`.
    pub(super) fn new(file: &File, len: u64) -> Option<Map> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        if !install() {
            return None;
        }
        let slot = REGISTRY.iter().position(|s| {
            s.owned
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        // safety: a fresh read-only shared mapping of an open descriptor; the kernel picks
        // the address, so nothing else is replaced.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        let s = &REGISTRY[slot];
        if p == libc::MAP_FAILED {
            s.owned.store(false, Ordering::Release);
            return None;
        }
        s.faulted.store(false, Ordering::Relaxed);
        s.len.store(len, Ordering::Relaxed);
        s.start.store(p as usize, Ordering::Release);
        Some(Map {
            ptr: p as *const u8,
            len,
            slot,
        })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether a page of it became zeros (the file was cut under it): its bytes can no
    /// longer be told from the file's.
    pub(super) fn faulted(&self) -> bool {
        REGISTRY[self.slot].faulted.load(Ordering::Acquire)
    }

    /// Lets go of the pages read so far: they stay in the page cache and come back on the
    /// next access (a minor fault). Without it, every page a reader ever touched would stay
    /// in its resident memory, the whole journal after a backlog.
    pub(super) fn release(&self) {
        // safety: MADV_DONTNEED on a shared file mapping only drops this process's page
        // table entries for it; the mapping stays valid and reads the same file bytes, so
        // a slice borrowed from it still reads them (faulting them back in).
        unsafe { libc::madvise(self.ptr as *mut c_void, self.len, libc::MADV_DONTNEED) };
    }

    /// `len` bytes at `offset`, when they lie inside the mapping.
    pub(super) fn get(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        if start.checked_add(len)? > self.len {
            return None;
        }
        // safety: [start, start + len) lies inside the live mapping, which outlives the
        // returned borrow of self. Its bytes may change while borrowed (module invariant).
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(start), len) })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        let s = &REGISTRY[self.slot];
        // The guard stops watching before the range is unmapped (and may be reused).
        s.start.store(0, Ordering::Release);
        // safety: unmaps exactly the mapping this value made; no borrow of it outlives self.
        unsafe { libc::munmap(self.ptr as *mut c_void, self.len) };
        s.len.store(0, Ordering::Relaxed);
        s.owned.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn page() -> usize {
        install();
        PAGE.load(Ordering::Relaxed)
    }

    #[test]
    fn a_file_cut_under_its_mapping_reads_zeros_and_says_so() {
        let p = page();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![7u8; 3 * p]).unwrap();
        f.flush().unwrap();
        let m = Map::new(f.as_file(), 3 * p as u64).unwrap();
        assert_eq!(m.get(2 * p as u64, 4).unwrap(), &[7; 4]);
        assert!(!m.faulted());
        f.as_file().set_len(p as u64).unwrap();
        // The third page is gone: without the guard this read kills the process.
        let b = m.get(2 * p as u64 + 8, 4).unwrap().to_vec();
        assert_eq!(b, [0; 4]);
        assert!(
            m.faulted(),
            "the window must learn that the bytes are not the file's"
        );
        assert_eq!(
            m.get(0, 2).unwrap(),
            &[7; 2],
            "pages still in the file stay"
        );
        assert!(
            m.get(3 * p as u64 - 1, 2).is_none(),
            "never past the mapping"
        );
    }

    #[test]
    fn slots_are_given_back() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[1; 100]).unwrap();
        f.flush().unwrap();
        for _ in 0..2 * SLOTS {
            let m = Map::new(f.as_file(), 100).unwrap();
            assert_eq!(m.get(99, 1).unwrap(), &[1]);
        }
        assert!(
            Map::new(f.as_file(), 0).is_none(),
            "an empty file is not mapped"
        );
    }

    /// A SIGBUS outside the guard's mappings is not swallowed: the process dies of it as
    /// it would without the guard (a child process does the faulting).
    #[test]
    fn a_sigbus_elsewhere_still_kills() {
        use std::os::unix::process::ExitStatusExt;
        if std::env::var_os("JK_FOREIGN_SIGBUS").is_some() {
            return foreign_sigbus();
        }
        let st = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "journal::native::map::tests::a_sigbus_elsewhere_still_kills",
                "--test-threads",
                "1",
            ])
            .env("JK_FOREIGN_SIGBUS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.signal(), Some(libc::SIGBUS), "{st}");
    }

    fn foreign_sigbus() {
        let p = page();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![7u8; 2 * p]).unwrap();
        f.flush().unwrap();
        // The guard is installed and watching one mapping.
        let ours = Map::new(f.as_file(), 2 * p as u64).unwrap();
        // safety (test): a mapping the guard does not know, read past the file's end.
        let theirs = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * p,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_file().as_raw_fd(),
                0,
            )
        };
        assert_ne!(theirs, libc::MAP_FAILED);
        f.as_file().set_len(0).unwrap();
        // safety (test): inside the mapping just made; the read is meant to fault.
        let b = unsafe { std::ptr::read_volatile((theirs as *const u8).add(p)) };
        drop(ours);
        panic!("read {b} from a page past the end: the SIGBUS was swallowed");
    }
}
