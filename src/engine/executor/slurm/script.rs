//! The sbatch script of a job array: one task per run of its manifest, each `exec`ing
//! `runner exec MANIFEST --index $SLURM_ARRAY_TASK_ID` (so that runner itself receives
//! Slurm's signals: SIGTERM on `scancel` or preemption, SIGUSR1 before the time limit).

use std::path::{Path, PathBuf};

use crate::recipe::SlurmConfig;

/// Seconds before the time limit at which Slurm sends SIGUSR1 (`--signal=B:USR1@N`): the
/// task checkpoints and requeues itself. Shorter limits get a tenth of the limit (at least
/// 5 s), or a task would be warned as it starts, every time it is requeued.
pub const WARN_BEFORE_LIMIT_S: u64 = 120;

/// A Slurm time limit in seconds (None: unlimited or not understood).
pub fn time_limit_secs(t: &str) -> Option<u64> {
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, t),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<_>>()?;
    let (h, m, s) = match (t.contains('-'), parts.as_slice()) {
        (true, [h]) => (*h, 0, 0),
        (true, [h, m]) => (*h, *m, 0),
        (true, [h, m, s]) | (false, [h, m, s]) => (*h, *m, *s),
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) => (0, *m, *s),
        _ => return None,
    };
    Some(((days * 24 + h) * 60 + m) * 60 + s)
}

/// The warning's lead time for a time limit.
pub fn warn_before(time: Option<&str>) -> u64 {
    match time.and_then(time_limit_secs) {
        Some(limit) if limit < 10 * WARN_BEFORE_LIMIT_S => (limit / 10).max(5),
        _ => WARN_BEFORE_LIMIT_S,
    }
}

/// What a job array's script needs.
pub struct ScriptSpec<'a> {
    pub sweep_id: i64,
    pub recipe: &'a str,
    /// Tasks in the array (runs in its manifest).
    pub tasks: usize,
    pub opts: &'a SlurmConfig,
    /// Where the manifest, the script and the tasks' output files go.
    pub dir: &'a Path,
    pub workdir: &'a Path,
    /// The runner binary the tasks run.
    pub exe: &'a Path,
    pub manifest: &'a Path,
    /// `afterok:JOB` of the array the runs start from (a pipeline's parents).
    pub dependency: Option<String>,
}

/// A task's output file (`%A_%a` as Slurm fills it in).
pub fn task_log(dir: &Path, job: i64, task: i64) -> PathBuf {
    dir.join(format!("task-{job}_{task}.log"))
}

/// Single quotes for the shell.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The script's text.
pub fn render(spec: &ScriptSpec) -> String {
    let o = spec.opts;
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!(
        "# written by runner {} for sweep {} of {}: {} run(s), one array task each.\n\
         # Each task trains run I of the manifest, writing its records into the run's folder;\n\
         # `runner collect` imports them into the store, `runner status` shows the tasks.\n",
        env!("CARGO_PKG_VERSION"),
        spec.sweep_id,
        spec.recipe,
        spec.tasks
    ));
    let mut line = |opt: String| s.push_str(&format!("#SBATCH {opt}\n"));
    line(format!("--job-name=runner-sweep-{}", spec.sweep_id));
    let last = spec.tasks.saturating_sub(1);
    line(match o.max_parallel {
        Some(k) => format!("--array=0-{last}%{k}"),
        None => format!("--array=0-{last}"),
    });
    line(format!(
        "--output={}",
        quote(&spec.dir.join("task-%A_%a.log").display().to_string())
    ));
    line("--open-mode=append".into());
    line(format!(
        "--chdir={}",
        quote(&spec.workdir.display().to_string())
    ));
    line("--requeue".into());
    line(format!(
        "--signal=B:USR1@{}",
        warn_before(o.time.as_deref())
    ));
    if let Some(p) = &o.partition {
        line(format!("--partition={p}"));
    }
    if let Some(n) = o.cpus_per_run {
        line(format!("--cpus-per-task={n}"));
    }
    if let Some(n) = o.gpus_per_run.filter(|n| *n > 0) {
        line(format!("--gres=gpu:{n}"));
    }
    if let Some(m) = &o.mem {
        line(format!("--mem={m}"));
    }
    if let Some(t) = &o.time {
        line(format!("--time={t}"));
    }
    if let Some(d) = &spec.dependency {
        line(format!("--dependency={d}"));
        line("--kill-on-invalid-dep=yes".into());
    }
    for a in &o.sbatch_args {
        line(a.clone());
    }
    s.push_str("set -e\n");
    if !o.setup.is_empty() {
        s.push_str("# [slurm] setup\n");
        for l in &o.setup {
            s.push_str(l);
            s.push('\n');
        }
    }
    s.push_str("# --cpus-per-run: the task's threads\n");
    s.push_str("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n");
    s.push_str(&format!(
        "exec {} exec {} --index \"$SLURM_ARRAY_TASK_ID\"\n",
        quote(&spec.exe.display().to_string()),
        quote(&spec.manifest.display().to_string())
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_asks_for_what_the_options_say() {
        let opts = SlurmConfig {
            partition: Some("gpu".into()),
            gpus_per_run: Some(1),
            cpus_per_run: Some(8),
            mem: Some("32G".into()),
            time: Some("12:00:00".into()),
            max_parallel: Some(2),
            sbatch_args: vec!["--account=lab".into()],
            setup: vec!["module load cuda".into()],
        };
        let text = render(&ScriptSpec {
            sweep_id: 7,
            recipe: "recipes/x.toml",
            tasks: 4,
            opts: &opts,
            dir: Path::new("/shared/runs/slurm/sweep-7"),
            workdir: Path::new("/shared/work dir"),
            exe: Path::new("/opt/runner"),
            manifest: Path::new("/shared/runs/slurm/sweep-7/array-0.json"),
            dependency: Some("afterok:41".into()),
        });
        for want in [
            "#SBATCH --array=0-3%2\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --cpus-per-task=8\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --mem=32G\n",
            "#SBATCH --time=12:00:00\n",
            "#SBATCH --signal=B:USR1@120\n",
            "#SBATCH --dependency=afterok:41\n",
            "#SBATCH --account=lab\n",
            "#SBATCH --chdir='/shared/work dir'\n",
            "module load cuda\n",
            "exec /opt/runner exec /shared/runs/slurm/sweep-7/array-0.json --index \"$SLURM_ARRAY_TASK_ID\"\n",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
        assert_eq!(time_limit_secs("90"), Some(5400));
        assert_eq!(time_limit_secs("1:30"), Some(90));
        assert_eq!(time_limit_secs("2-1"), Some(2 * 86400 + 3600));
        assert_eq!(time_limit_secs("1-00:00:30"), Some(86430));
        assert_eq!(warn_before(Some("12:00:00")), 120);
        assert_eq!(warn_before(Some("5")), 30);
        assert_eq!(warn_before(Some("0:20")), 5);
        // every #SBATCH line comes before the first command, or sbatch ignores it
        let first_cmd = text.find("set -e").unwrap();
        assert!(text.rfind("#SBATCH").unwrap() < first_cmd);
    }
}
