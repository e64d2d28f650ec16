//! One measured run of a command: wall time and the peak memory of its process tree, and the rows they make.

use super::*;

pub(crate) struct Sample {
    pub(crate) secs: f64,
    pub(crate) peak_kib: i64,
    /// What the child printed on stdout.
    pub(crate) out: String,
}

/// Runs `cmd` to completion; wall time from spawn to reap, and the peak RSS of the largest
/// process in its tree (`ru_maxrss` from `wait4`). Stdout is discarded; stderr is kept for
/// the error message.
pub(crate) fn run(cmd: &mut Command) -> Result<Sample, String> {
    let shown = format!("{cmd:?}");
    let err = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut out = tempfile::tempfile().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: plain syscall on our own child, with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: as above.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let secs = start.elapsed().as_secs_f64();
    // Already reaped: dropping `child` neither waits nor kills.
    drop(child);
    if r != pid {
        return Err(format!(
            "{shown}: wait4: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut text = String::new();
        let mut err = err;
        let _ = err.seek(std::io::SeekFrom::Start(0));
        let _ = err.read_to_string(&mut text);
        let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(format!("{shown} failed ({status:#x}): {tail}"));
    }
    let mut text = String::new();
    let _ = out.seek(std::io::SeekFrom::Start(0));
    let _ = out.read_to_string(&mut text);
    Ok(Sample {
        secs,
        peak_kib: usage.ru_maxrss,
        out: text,
    })
}

pub(crate) fn sh(script: &str, dir: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).current_dir(dir);
    c
}

#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) target: String,
    pub(crate) corpus: String,
    pub(crate) tool: String,
    pub(crate) op: String,
    pub(crate) secs: Vec<f64>,
    pub(crate) peak_kib: Vec<i64>,
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
