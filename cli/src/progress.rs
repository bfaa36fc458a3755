//! Build progress on a terminal: picks the renderer for `--progress` and draws live spinners.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cairn_builder::build::{Event, Phase};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::args::Progress;

/// How `cairn build` shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live spinners, one line per running step.
    Tty,
    /// Numbered lines that never redraw, for logs and CI.
    Plain,
    /// Nothing; only the image id on standard output.
    Quiet,
    /// BuildKit's SolveStatus JSON lines (written by the rawjson module).
    RawJson,
}

/// The `--progress` mode: the flag, else `CAIRN_PROGRESS`, else `BUILDKIT_PROGRESS` (which CI
/// scripts written for docker set), else auto. `env` looks a variable up, so tests need not
/// touch the process's environment.
pub fn requested(
    flag: Option<Progress>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Progress> {
    use clap::ValueEnum as _;
    if let Some(p) = flag {
        return Ok(p);
    }
    for var in ["CAIRN_PROGRESS", "BUILDKIT_PROGRESS"] {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            return Progress::from_str(&v, true).map_err(|_| {
                anyhow::anyhow!("{var}={v:?}: use auto, tty, plain, quiet or rawjson")
            });
        }
    }
    Ok(Progress::Auto)
}

/// Picks the renderer; pure so the `auto` rule can be table-tested without a terminal. A
/// `tty` asked for where standard error is no terminal is plain: spinners there would be
/// hidden, and RUN's output with them.
pub fn choose(progress: Progress, quiet: bool, stderr_is_tty: bool) -> Mode {
    if quiet {
        return Mode::Quiet;
    }
    match progress {
        Progress::Quiet => Mode::Quiet,
        Progress::Plain => Mode::Plain,
        Progress::RawJson => Mode::RawJson,
        Progress::Tty | Progress::Auto if stderr_is_tty => Mode::Tty,
        Progress::Tty | Progress::Auto => Mode::Plain,
    }
}

/// Sources smaller than this copy too fast for a byte bar to be worth drawing.
const BYTE_BAR_MIN: u64 = 16 << 20;

/// A running step: its bar and the `[stage i/n] text` label its final line repeats.
#[derive(Debug)]
struct Running {
    bar: ProgressBar,
    label: String,
}

/// Draws one spinner per running step; a finished step becomes a permanent `✔` line.
///
/// Bars are keyed by step id, not by position, because stages run in parallel and finish out of
/// order; the map sits behind a mutex because the builder reports from several threads.
#[derive(Debug)]
pub struct Tty {
    multi: MultiProgress,
    running: Mutex<HashMap<usize, Running>>,
}

impl Tty {
    /// A renderer on standard error (indicatif hides it when standard error is not a terminal).
    pub fn stderr() -> Self {
        Self::new(ProgressDrawTarget::stderr())
    }

    pub fn new(target: ProgressDrawTarget) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(target),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn style() -> ProgressStyle {
        // `wide_msg` lets the step text take whatever width is left, so the elapsed time stays
        // visible; the finished line is printed unclipped once the step is done.
        ProgressStyle::with_template("{spinner:.cyan} {wide_msg} {secs:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "secs",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
                },
            )
    }

    /// A COPY or ADD of large sources: the bytes done of the total, and the rate.
    fn byte_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{spinner:.cyan} {wide_msg} {bar:24} {bytes}/{total_bytes} {bytes_per_sec} {secs:.dim}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "secs",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
            },
        )
    }

    /// The running steps; a panic elsewhere must not stop the bars being cleared, so a poisoned
    /// lock is still used.
    fn running(&self) -> MutexGuard<'_, HashMap<usize, Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn event(&self, event: Event) {
        match event {
            Event::Step {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let label = format!("{} {text}", step_label(&stage, index, total));
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(Self::style());
                bar.set_message(label.clone());
                // Ticking on a timer keeps the spinner and elapsed time moving during a long RUN.
                bar.enable_steady_tick(Duration::from_millis(100));
                // A repeated id replaces its stale bar rather than leaving it spinning forever.
                if let Some(old) = self.running().insert(id, Running { bar, label }) {
                    self.close(old);
                }
            }
            Event::Done { id, seconds } => {
                let step = self.running().remove(&id);
                if let Some(step) = step {
                    // Printed above the live bars, the finished line scrolls into the terminal's
                    // history whole instead of being redrawn (and clipped) on every tick.
                    let _ = self
                        .multi
                        .println(format!("✔ {}  {seconds:.1}s", step.label));
                    self.close(step);
                }
            }
            Event::Cached { id } => {
                let step = self.running().remove(&id);
                if let Some(step) = step {
                    let _ = self.multi.println(format!("✔ {}  CACHED", step.label));
                    self.close(step);
                }
            }
            Event::Miss { .. } | Event::Layer { .. } => {}
            Event::Bytes { id, done, total } => {
                if total < BYTE_BAR_MIN {
                    return;
                }
                if let Some(step) = self.running().get(&id) {
                    if step.bar.length() != Some(total) {
                        step.bar.set_style(Self::byte_style());
                        step.bar.set_length(total);
                    }
                    step.bar.set_position(done);
                }
            }
            Event::Log { id, line } => {
                let _ = self.multi.println(format!("#{id} {line}"));
            }
            Event::Warning(w) => {
                let _ = self.multi.println(format!("WARNING: {w}"));
            }
            Event::Lint(l) => {
                let _ = self
                    .multi
                    .println(format!("WARN: {}", crate::lintline::short(&l)));
            }
            Event::Note(n) => {
                let _ = self.multi.println(n);
            }
            Event::Timing { id, phase, seconds } => {
                let _ = self.multi.println(timing_line(id, phase, seconds));
            }
        }
    }

    fn close(&self, step: Running) {
        step.bar.finish_and_clear();
        self.multi.remove(&step.bar);
    }

    /// Settles every step still running (the build failed) so the error prints on a clean line.
    pub fn finish(&self) {
        let mut left: Vec<_> = self.running().drain().collect();
        left.sort_by_key(|(id, _)| *id);
        for (_, step) in left {
            let seconds = step.bar.elapsed().as_secs_f64();
            let _ = self
                .multi
                .println(format!("✘ {}  {seconds:.1}s", step.label));
            step.bar.finish_and_clear();
            self.multi.remove(&step.bar);
        }
        let _ = self.multi.clear();
    }
}

impl Drop for Tty {
    /// The renderer is dropped when the build returns, error or not, and before `main` prints the
    /// error: clearing here means no spinner is left half-drawn above it.
    fn drop(&mut self) {
        self.finish();
    }
}

/// Plain progress that remembers which steps are running, so a failed build ends each with
/// `#N ERROR: ...` as BuildKit's plain output does.
#[derive(Default)]
pub struct Plain {
    running: Mutex<std::collections::BTreeSet<usize>>,
}

impl Plain {
    pub fn event(&self, event: Event) {
        if let Ok(mut r) = self.running.lock() {
            match &event {
                Event::Step { id, .. } => {
                    r.insert(*id);
                }
                Event::Done { id, .. } | Event::Cached { id } => {
                    r.remove(id);
                }
                _ => {}
            }
        }
        plain(event);
    }

    /// The build failed with `error`: every step still running failed with it.
    pub fn fail(&self, error: &str) {
        let first = error.lines().next().unwrap_or_default();
        let running = self.running.lock().map(|r| r.clone()).unwrap_or_default();
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        for id in running {
            let _ = err.write_all(format!("#{id} ERROR: {first}\n").as_bytes());
        }
    }
}

/// Renders progress events as numbered plain lines on standard error.
pub fn plain(event: Event) {
    let line = match event {
        Event::Step {
            id,
            stage,
            index,
            total,
            text,
        } => format!("#{id} {} {text}\n", step_label(&stage, index, total)),
        Event::Done { id, seconds } => format!("#{id} DONE {seconds:.1}s\n"),
        Event::Cached { id } => format!("#{id} CACHED\n"),
        Event::Miss { id, reason } => format!("#{id} cache miss: {reason}\n"),
        // A log keeps every line; a byte count a few times a second would only bury them.
        Event::Bytes { .. } | Event::Layer { .. } => return,
        // A carriage return (a progress bar redrawn in place) would send the terminal back over
        // `#N`: each redrawn state is a line of its own, as BuildKit's plain output has it.
        Event::Log { id, line } => line
            .split('\r')
            .filter(|seg| !seg.is_empty())
            .map(|seg| format!("#{id} {seg}\n"))
            .collect(),
        Event::Warning(w) => format!("WARNING: {w}\n"),
        Event::Lint(l) => format!("WARN: {}\n", crate::lintline::short(&l)),
        Event::Note(n) => format!("{n}\n"),
        Event::Timing { id, phase, seconds } => format!("{}\n", timing_line(id, phase, seconds)),
    };
    // One write a line: standard error is unbuffered, and `writeln!` with arguments would
    // make a system call of every piece (a cached build's output was mostly such calls).
    use std::io::Write as _;
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `#3 timing: layer 0.412s` (`--debug-timings`).
pub fn timing_line(id: usize, phase: Phase, seconds: f64) -> String {
    format!("#{id} timing: {} {seconds:.3}s", phase.name())
}

/// `[stage 2/5]`, or `[2/5]` for the one stage of a Dockerfile (BuildKit's names).
pub(crate) fn step_label(stage: &str, index: usize, total: usize) -> String {
    if stage.is_empty() {
        format!("[{index}/{total}]")
    } else {
        format!("[{stage} {index}/{total}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: usize, index: usize, text: &str) -> Event {
        Event::Step {
            id,
            stage: "stage-0".into(),
            index,
            total: 3,
            text: text.into(),
        }
    }

    #[test]
    fn tty_renders_steps_done_and_abandoned() {
        let tty = Tty::new(ProgressDrawTarget::hidden());
        tty.event(step(1, 1, "FROM busybox"));
        tty.event(Event::Done {
            id: 1,
            seconds: 0.1,
        });
        tty.event(step(2, 2, &"RUN echo a very long command ".repeat(40)));
        tty.event(step(3, 3, "COPY . /app"));
        tty.event(Event::Bytes {
            id: 3,
            done: 1 << 20,
            total: 1 << 30,
        });
        {
            let running = tty.running();
            let bar = &running[&3].bar;
            assert_eq!((bar.position(), bar.length()), (1 << 20, Some(1 << 30)));
        }
        // Small sources keep the spinner.
        tty.event(Event::Bytes {
            id: 2,
            done: 10,
            total: 100,
        });
        assert_eq!(tty.running()[&2].bar.length(), None);
        tty.event(Event::Done {
            id: 3,
            seconds: 0.4,
        });
        // A Done for an unknown id is ignored, not a panic.
        tty.event(Event::Done {
            id: 99,
            seconds: 0.0,
        });
        assert_eq!(tty.running().keys().copied().collect::<Vec<_>>(), vec![2]);
        // Step 2 never finishes, as when the build fails: finishing abandons it cleanly.
        tty.finish();
        assert!(tty.running().is_empty());
        drop(tty);
    }

    #[test]
    fn the_flag_then_cairn_then_buildkit_variables_choose() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let both = env(&[
            ("CAIRN_PROGRESS", "plain"),
            ("BUILDKIT_PROGRESS", "rawjson"),
        ]);
        assert_eq!(
            requested(Some(Progress::Quiet), both).unwrap(),
            Progress::Quiet
        );
        assert_eq!(requested(None, both).unwrap(), Progress::Plain);
        let buildkit = env(&[("BUILDKIT_PROGRESS", "rawjson")]);
        assert_eq!(requested(None, buildkit).unwrap(), Progress::RawJson);
        assert_eq!(requested(None, env(&[])).unwrap(), Progress::Auto);
        let err = requested(None, env(&[("BUILDKIT_PROGRESS", "fancy")])).unwrap_err();
        assert!(err.to_string().contains("BUILDKIT_PROGRESS"), "{err}");
    }

    #[test]
    fn choose_picks_the_renderer() {
        use Progress::{Auto, Plain, Quiet, RawJson, Tty};
        let table = [
            // (progress, -q, stderr is a tty) -> mode
            (Auto, false, true, Mode::Tty),
            (Auto, false, false, Mode::Plain),
            (Tty, false, true, Mode::Tty),
            (Tty, false, false, Mode::Plain),
            (RawJson, false, true, Mode::RawJson),
            (RawJson, false, false, Mode::RawJson),
            (Plain, false, true, Mode::Plain),
            (Plain, false, false, Mode::Plain),
            (Quiet, false, true, Mode::Quiet),
            (Quiet, false, false, Mode::Quiet),
            (Auto, true, true, Mode::Quiet),
            (Tty, true, true, Mode::Quiet),
            (Plain, true, false, Mode::Quiet),
        ];
        for (progress, quiet, tty, want) in table {
            assert_eq!(
                choose(progress, quiet, tty),
                want,
                "{progress:?} quiet={quiet} tty={tty}"
            );
        }
    }
}
