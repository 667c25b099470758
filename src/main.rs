/// The allocator of the whole process, C libraries included: with the `override` feature
/// mimalloc also defines (and the binary exports) `malloc`, `free` and the rest, so
/// librdkafka's per-record allocations, made on the shipping thread and freed on the
/// delivery-report thread, take mimalloc's cross-thread free list instead of glibc's arena
/// lock, and memory libsystemd or glibc allocates is freed by the same allocator that
/// made it. Figures: docs/performance.md (#32).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    journald_kafka::main()
}

#[cfg(test)]
mod tests {
    unsafe extern "C" {
        /// mimalloc's own question: was `p` allocated by mimalloc?
        fn mi_is_in_heap_region(p: *const std::ffi::c_void) -> bool;
    }

    /// Memory a shared library allocates (here glibc's `strdup`, which calls `malloc`
    /// through the dynamic linker, as libsystemd does) must come from the same allocator
    /// as memory allocated here, or freeing it on either side would be undefined.
    #[test]
    fn shared_libraries_allocate_from_the_same_allocator_as_the_binary() {
        let from_rust = Box::new([0u8; 64]);
        // safety: strdup copies a NUL-terminated string we own; the copy is freed below
        // with free, which is what strdup's contract asks.
        let from_c = unsafe { libc::strdup(c"journald-kafka".as_ptr()) };
        assert!(!from_c.is_null());
        // safety: both pointers are live allocations; the query only compares addresses.
        let (rust_mi, c_mi) = unsafe {
            (
                mi_is_in_heap_region(from_rust.as_ptr().cast()),
                mi_is_in_heap_region(from_c.cast()),
            )
        };
        // safety: from_c came from strdup and is freed once.
        unsafe { libc::free(from_c.cast()) };
        assert!(rust_mi, "Rust's allocations are not mimalloc's");
        assert!(
            c_mi,
            "glibc's malloc was not replaced: C libraries allocate elsewhere"
        );
    }
}
