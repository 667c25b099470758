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

/// The largest file mapped (journald's files are at most 128 MiB by default), and the
/// address space all mappings may take together: a sparse file costs nothing on disk but
/// its whole size in address space, and a few claiming terabytes would leave none for the
/// allocator. Files past either are read through `pread`.
const MAX_MAP: usize = 4 << 30;
const MAX_MAPPED: usize = 256 << 30;

/// Address space taken by the live mappings.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

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

/// SIGBUS's disposition before the guard, which gets every SIGBUS that is not ours.
struct Previous(libc::sigaction);
static PREVIOUS: std::sync::OnceLock<Previous> = std::sync::OnceLock::new();

fn install() -> bool {
    INSTALL.call_once(|| {
        // safety: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        // safety: zeroed is a valid `sigaction` (no handler, empty mask); the call is
        // given a valid pointer to it. The previous disposition is stored before ours is set.
        unsafe {
            let mut previous: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous) != 0 {
                return;
            }
            let _ = PREVIOUS.set(Previous(previous));
            if guard(&ours()) {
                INSTALLED.store(true, Ordering::Release);
            }
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

fn ours() -> libc::sigaction {
    // safety: zeroed is a valid `sigaction`, then filled in; sigemptyset gets a valid mask.
    unsafe {
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_sigbus as *const () as usize;
        // SA_ONSTACK as Rust's own handler, which may be called from ours (`pass_on`);
        // SA_NODEFER so that a SIGBUS raised to die is not held back while we run.
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER | libc::SA_ONSTACK | libc::SA_RESTART;
        libc::sigemptyset(&mut ours.sa_mask);
        ours
    }
}

fn guard(action: &libc::sigaction) -> bool {
    // safety: a valid sigaction; sigaction is async-signal-safe.
    unsafe { libc::sigaction(libc::SIGBUS, action, std::ptr::null_mut()) == 0 }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // The interrupted code may be looking at errno.
    // safety: errno's location is valid for the calling thread.
    let errno = unsafe { *libc::__errno_location() };
    // safety: with SA_SIGINFO the kernel passes a valid siginfo for this signal.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // A fault the kernel raised (code > 0; a signal sent by a process has code <= 0).
    if code == libc::BUS_ADRERR && zero_page(addr) {
        // safety: as above.
        unsafe { *libc::__errno_location() = errno };
        return;
    }
    pass_on(sig, info, ctx, code);
    if code <= 0 || code == libc::BUS_MCEERR_AO {
        // A signal sent by a process, or a machine check reported after the fact, does
        // not come back by itself (a fault does, and is then the previous disposition's):
        // go on guarding.
        guard(&ours());
    }
    // safety: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Hands a SIGBUS that is not one of the guard's to the disposition before it, as if the
/// guard were not there: its handler is called (Rust's own, by default); under the default
/// action a fault faults again once it is restored, and a signal sent by a process is
/// raised again.
fn pass_on(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut c_void, code: libc::c_int) {
    let Some(Previous(previous)) = PREVIOUS.get() else {
        return;
    };
    match previous.sa_sigaction {
        libc::SIG_DFL => {
            guard(previous);
            if code <= 0 {
                // safety: raise is async-signal-safe; SA_NODEFER lets it through now.
                unsafe { libc::raise(sig) };
            }
        }
        libc::SIG_IGN => {
            if code > 0 {
                // A fault cannot be ignored: it would fault forever.
                // safety: a zeroed sigaction with SIG_DFL is valid.
                let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
                default.sa_sigaction = libc::SIG_DFL;
                guard(&default);
            }
        }
        handler if previous.sa_flags & libc::SA_SIGINFO != 0 => {
            // safety: the previous disposition is a three-argument handler (SA_SIGINFO),
            // called with the arguments the kernel gave ours.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(handler) };
            f(sig, info, ctx);
        }
        handler => {
            // safety: the previous disposition is a one-argument handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            f(sig);
        }
    }
}

/// Puts a page of zeros over the page at `addr` if it lies in one of the guard's mappings,
/// and marks that mapping faulted.
fn zero_page(addr: usize) -> bool {
    for s in &REGISTRY {
        let start = s.start.load(Ordering::Acquire);
        if start == 0 || addr < start {
            continue;
        }
        let len = s.len.load(Ordering::Acquire);
        // The slot may have been emptied and filled again in between: start and length
        // must belong to one mapping.
        if s.start.load(Ordering::Acquire) != start || addr - start >= len {
            continue;
        }
        let page = addr & !(PAGE.load(Ordering::Relaxed) - 1);
        // safety: the page lies inside a live mapping made by this module (the registry's
        // invariant); replacing it with zeros changes only what reads of that mapping see.
        // mmap is not on POSIX's list of async-signal-safe functions, but on Linux it is a
        // plain system call (systemd's own SIGBUS handler makes the same one).
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
            return true;
        }
    }
    false
}

/// The page size the guard works in.
pub(super) fn page() -> usize {
    install();
    PAGE.load(Ordering::Relaxed)
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
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= MAX_MAP)?;
        if !install() {
            return None;
        }
        if MAPPED.fetch_add(len, Ordering::AcqRel) + len > MAX_MAPPED {
            MAPPED.fetch_sub(len, Ordering::AcqRel);
            return None;
        }
        let Some(slot) = REGISTRY.iter().position(|s| {
            s.owned
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        }) else {
            MAPPED.fetch_sub(len, Ordering::AcqRel);
            return None;
        };
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
            MAPPED.fetch_sub(len, Ordering::AcqRel);
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

    /// Reads a byte of every page of `len` bytes at `offset` (inside the mapping), so that
    /// a page cut from the file faults now, and says whether all of them are the file's.
    /// The caller then reads them knowing that; only a cut in the nanoseconds between this
    /// and its own read can still show it zeros (bytes it survives from a hostile file).
    pub(super) fn intact(&self, offset: u64, len: usize) -> bool {
        let Some(b) = self.get(offset, len) else {
            return false;
        };
        let page = PAGE.load(Ordering::Relaxed);
        let base = self.ptr as usize + offset as usize;
        let mut at = 0;
        while at < len {
            // safety: `at` < len, inside the slice; a volatile read so it is not elided.
            unsafe { std::ptr::read_volatile(b.as_ptr().add(at)) };
            at = ((base + at) / page + 1) * page - base;
        }
        !self.faulted()
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
        MAPPED.fetch_sub(self.len, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `pages` pages of 7s.
    fn sevens(pages: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![7u8; pages * page()]).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn a_file_cut_under_its_mapping_reads_zeros_and_says_so() {
        let p = page();
        let f = sevens(3);
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

    /// `kill -BUS` (a signal no fault raised) goes to the previous disposition as before the
    /// guard (Rust's handler, which lets the process live), and the guard stays: a file cut
    /// under a mapping afterwards still reads as zeros.
    #[test]
    fn a_sigbus_sent_by_a_process_leaves_the_guard_in_place() {
        if std::env::var_os("JK_SENT_SIGBUS").is_some() {
            let p = page();
            let f = sevens(2);
            let m = Map::new(f.as_file(), 2 * p as u64).unwrap();
            // safety (test): raise has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGBUS) };
            f.as_file().set_len(0).unwrap();
            assert_eq!(m.get(p as u64, 4).unwrap().to_vec(), [0; 4]);
            assert!(m.faulted());
            return;
        }
        let st = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "journal::native::map::tests::a_sigbus_sent_by_a_process_leaves_the_guard_in_place",
                "--test-threads",
                "1",
            ])
            .env("JK_SENT_SIGBUS", "1")
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}: {}",
            st.status,
            String::from_utf8_lossy(&st.stdout)
        );
    }

    fn foreign_sigbus() {
        let p = page();
        let f = sevens(2);
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
