//! The `blockctl` binary: everything it does is `blockctl::run`.

fn main() {
    // Like other command-line tools, stop quietly when the reader of stdout goes away
    // (`blockctl ls SLUG | head`) instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread of ours writes to stdout.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Frames and packs are buffers of 1–16 MiB, made and freed on many threads. glibc's
    // default raises its mmap threshold after the first such free, and keeps later ones in
    // per-thread arenas: the peak memory of a 512 MiB put grew to twice what was live. With
    // a fixed threshold they are mapped and unmapped whole, so memory stays what is in use.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first thing in main, before any other thread exists or allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
    std::process::exit(blockctl::run(std::env::args_os()));
}
