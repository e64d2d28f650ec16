//! The `blockctl` binary: everything it does is `blockctl::run`.

fn main() {
    // Like other command-line tools, stop quietly when the reader of stdout goes away
    // (`blockctl ls SLUG | head`) instead of panicking on the broken pipe.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread of ours writes to stdout.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(blockctl::run(std::env::args_os()));
}
