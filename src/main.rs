/// The allocator of the whole process, C libraries included: with
/// `unprefixed_malloc_on_supported_platforms` jemalloc defines `malloc`, `free` and the
/// rest in the binary, which exports them, so librdkafka's per-record allocations (made on
/// the shipping thread, freed on the delivery-report thread) do not take glibc's arena lock
/// of the allocating thread, and memory libsystemd or glibc allocates is freed by the
/// allocator that made it. Settings: [`malloc_conf`]; why and figures: docs/design.md,
/// docs/performance.md (#32).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, in the binary itself: jemalloc reads this symbol before `main` (its
/// own definition is weak, so the linker takes this one), then the operator's `MALLOC_CONF`,
/// which still applies on top. A build-time setting (`JEMALLOC_SYS_WITH_MALLOC_CONF`, read
/// from .cargo/config.toml) was lost by any cargo run outside the repository.
///
/// Allocations of 2 MiB and more come from jemalloc's own arena for them, which returns
/// their pages as soon as they are freed, so multi-MB journal entries do not stay in the
/// heap of whichever thread freed them (fleet::memory_stays_bounded_with_multi_megabyte_
/// entries). librdkafka's request buffers (batch.size, 1 MB) stay below it: at 1 MiB they
/// faulted pages in for every produce request.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
static malloc_conf: &std::ffi::c_char = &MALLOC_SETTINGS[0];

static MALLOC_SETTINGS: [std::ffi::c_char; 27] = c_chars(b"oversize_threshold:2097152\0");

/// A NUL-terminated byte string as C's `char`s, in a constant.
const fn c_chars<const N: usize>(b: &[u8; N]) -> [std::ffi::c_char; N] {
    assert!(N > 0 && b[N - 1] == 0, "NUL-terminated");
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = b[i] as std::ffi::c_char;
        i += 1;
    }
    out
}

fn main() -> std::process::ExitCode {
    journald_kafka::main()
}

#[cfg(test)]
mod tests {
    use std::ffi::{CStr, c_void};

    /// Memory glibc allocates for its caller (`getcwd` with no buffer: glibc calls `malloc`
    /// through the dynamic linker, as libsystemd does) must come from the allocator the
    /// binary frees with, and every allocation entry point a shared library can call must
    /// resolve to the binary's own definition.
    #[test]
    fn shared_libraries_allocate_from_the_same_allocator_as_the_binary() {
        // safety: getcwd with a null buffer allocates one with malloc; freed below, once.
        let cwd = unsafe { libc::getcwd(std::ptr::null_mut(), 0) };
        assert!(!cwd.is_null());
        // safety: `cwd` is a live allocation; sallocx only reads jemalloc's metadata for it
        // and would fault on memory jemalloc did not allocate, which is the failure tested.
        let size = unsafe { tikv_jemalloc_sys::sallocx(cwd.cast(), 0) };
        assert!(size > 0);
        // safety: allocated by getcwd, freed once.
        unsafe { libc::free(cwd.cast()) };

        let ours: [(&CStr, *const c_void); 8] = [
            (c"malloc", libc::malloc as *const c_void),
            (c"free", libc::free as *const c_void),
            (c"calloc", libc::calloc as *const c_void),
            (c"realloc", libc::realloc as *const c_void),
            (c"posix_memalign", libc::posix_memalign as *const c_void),
            (c"aligned_alloc", libc::aligned_alloc as *const c_void),
            (c"memalign", libc::memalign as *const c_void),
            (
                c"malloc_usable_size",
                libc::malloc_usable_size as *const c_void,
            ),
        ];
        for (name, here) in ours {
            // safety: dlsym only looks a name up in the process's global scope.
            let global = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            assert_eq!(
                global.cast_const(),
                here,
                "{name:?}: shared libraries would call another allocator than the binary's"
            );
        }
    }

    /// The built-in setting ([`super::malloc_conf`]) is the one jemalloc runs with, wherever
    /// cargo ran: the multi-MB memory bound depends on it.
    #[test]
    fn large_allocations_use_the_oversize_arena() {
        let mut threshold: usize = 0;
        let mut len = std::mem::size_of::<usize>();
        // safety: mallctl writes at most `len` bytes (a size_t for this option) to
        // `threshold`, and reads nothing (no new value).
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                c"opt.oversize_threshold".as_ptr(),
                (&raw mut threshold).cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        assert_eq!(rc, 0, "jemalloc does not know opt.oversize_threshold");
        assert_eq!(threshold, 2 << 20);
    }
}
