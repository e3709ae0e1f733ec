//! The Slurm commands runner calls (`sbatch`, `sinfo`, `squeue`, `scontrol`), found on PATH,
//! and what it reads from their output. No accounting (`sacct`) is assumed: a job's state
//! comes from `squeue` while it is queued or running, then from `scontrol show job` while
//! Slurm still remembers it (`MinJobAge`), and is "gone" after that.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::SlurmError;

/// Job states in which a task may still run (or run again): its record log is not final.
pub const ALIVE: &[&str] = &[
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "COMPLETING",
    "SUSPENDED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "RESV_DEL_HOLD",
];

/// Whether a job state (as `squeue` / `scontrol` print it) may still run.
pub fn is_alive(state: &str) -> bool {
    ALIVE.contains(&state)
}

/// The state `runner status` shows for a task Slurm no longer knows.
pub const GONE: &str = "gone";

/// Where a program is on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The Slurm client commands.
#[derive(Debug, Clone, Default)]
pub struct SlurmClient;

impl SlurmClient {
    /// The client, when `sbatch` is on PATH.
    pub fn find() -> Result<SlurmClient, SlurmError> {
        match which("sbatch") {
            Some(_) => Ok(SlurmClient),
            None => Err(SlurmError::NoSbatch),
        }
    }

    /// Runs a command, with `stdin` fed to it; its stdout when it succeeds.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SlurmError> {
        let shown = format!("{program} {}", args.join(" "));
        let fail = |msg: String| SlurmError::Command {
            command: shown.clone(),
            msg,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim();
            Err(fail(if err.is_empty() {
                format!("exited with {}", out.status)
            } else {
                err.to_string()
            }))
        }
    }

    /// The cluster's partitions (`sinfo`).
    pub fn partitions(&self) -> Result<Vec<String>, SlurmError> {
        let out = self.run("sinfo", &["-h", "-o", "%P"], None)?;
        Ok(out
            .lines()
            .map(|l| l.trim().trim_end_matches('*').to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Asks `sbatch --test-only` whether it would accept a script (partition, time, memory,
    /// GPUs, options), submitting nothing; its complaint otherwise.
    pub fn test_only(&self, script: &str) -> Result<(), String> {
        match self.run("sbatch", &["--test-only"], Some(script)) {
            Ok(_) => Ok(()),
            Err(SlurmError::Command { msg, .. }) => Err(msg),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Submits a script with `sbatch --parsable`; the job id.
    pub fn submit(&self, script: &Path) -> Result<i64, SlurmError> {
        let path = script.display().to_string();
        let out = self
            .run("sbatch", &["--parsable", &path], None)
            .map_err(|e| SlurmError::Submit(e.to_string()))?;
        // "123" or "123;cluster"
        let id = out.trim().split(';').next().unwrap_or("").trim();
        id.parse::<i64>().map_err(|_| {
            SlurmError::Submit(format!(
                "sbatch --parsable {path} printed `{}`, not a job id",
                out.trim()
            ))
        })
    }

    /// The state of each array task asked for: `squeue` for the queued and running ones, then
    /// `scontrol show job` for the rest; [`GONE`] when Slurm no longer knows it.
    pub fn states(
        &self,
        tasks: &BTreeSet<(i64, i64)>,
    ) -> Result<BTreeMap<(i64, i64), String>, SlurmError> {
        let mut out = BTreeMap::new();
        if tasks.is_empty() {
            return Ok(out);
        }
        let queued = self.run("squeue", &["-h", "-r", "--me", "-o", "%F|%K|%T"], None)?;
        for (job, task, state) in parse_squeue(&queued) {
            if tasks.contains(&(job, task)) {
                out.insert((job, task), state);
            }
        }
        let missing: BTreeSet<i64> = tasks
            .iter()
            .filter(|t| !out.contains_key(t))
            .map(|t| t.0)
            .collect();
        for job in missing {
            // an unknown job id is an error of scontrol's: it is gone
            let text = self
                .run("scontrol", &["-o", "show", "job", &job.to_string()], None)
                .unwrap_or_default();
            for (j, task, state) in parse_scontrol(&text) {
                if tasks.contains(&(j, task)) {
                    out.entry((j, task)).or_insert(state);
                }
            }
        }
        for t in tasks {
            out.entry(*t).or_insert_with(|| GONE.to_string());
        }
        Ok(out)
    }

    /// `scontrol requeue JOB_TASK`: Slurm takes the task back and starts it again.
    pub fn requeue(&self, job: &str, task: Option<i64>) -> Result<(), String> {
        let id = match task {
            Some(t) => format!("{job}_{t}"),
            None => job.to_string(),
        };
        self.run("scontrol", &["requeue", &id], None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `squeue -h -r -o "%F|%K|%T"` lines: (array job id, task id, state); jobs that are not
/// arrays (task "N/A") are left out.
pub fn parse_squeue(text: &str) -> Vec<(i64, i64, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let job = f.next()?.trim().parse().ok()?;
            let task = f.next()?.trim().parse().ok()?;
            let state = f.next()?.trim().to_string();
            Some((job, task, state))
        })
        .collect()
}

/// `scontrol -o show job J` records (one per line): (ArrayJobId, ArrayTaskId, JobState) of
/// each array task; a record of tasks that never started (`ArrayTaskId=0-3%2`, e.g. an array
/// cancelled while pending) stands for each of them.
pub fn parse_scontrol(text: &str) -> Vec<(i64, i64, String)> {
    let mut out = Vec::new();
    for l in text.lines() {
        let field = |name: &str| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        let (Some(job), Some(tasks), Some(state)) = (
            field("ArrayJobId").and_then(|j| j.parse::<i64>().ok()),
            field("ArrayTaskId"),
            field("JobState"),
        ) else {
            continue;
        };
        for task in task_ids(&tasks) {
            out.push((job, task, state.clone()));
        }
    }
    out
}

/// The task ids of an array expression: `3`, `0-3`, `0-3%2`, `1,4-5`.
fn task_ids(expr: &str) -> Vec<i64> {
    let expr = expr.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in expr.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
                    out.extend(a..=b.min(a + 1_000_000));
                }
            }
            None => out.extend(part.parse::<i64>().ok()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_and_scontrol_lines_are_read() {
        let q = "3|1|PENDING\n3|0|RUNNING\n4|N/A|RUNNING\n";
        assert_eq!(
            parse_squeue(q),
            vec![(3, 1, "PENDING".into()), (3, 0, "RUNNING".into())]
        );
        let s = "JobId=9 ArrayJobId=7 ArrayTaskId=2 JobName=x JobState=COMPLETED Reason=None\n\
                 JobId=7 ArrayJobId=7 ArrayTaskId=3-4%1 JobState=PENDING\n";
        assert_eq!(
            parse_scontrol(s),
            vec![
                (7, 2, "COMPLETED".into()),
                (7, 3, "PENDING".into()),
                (7, 4, "PENDING".into())
            ]
        );
        assert_eq!(task_ids("1,4-5%2"), vec![1, 4, 5]);
        assert!(is_alive("REQUEUED") && !is_alive("CANCELLED") && !is_alive(GONE));
    }
}
