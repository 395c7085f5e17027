//! Progress of a long command, fed from the engine's counters: a bar on a terminal, a plain line
//! now and then when standard error is not a terminal (Job logs), or, with `--json`, one status
//! event per line on standard output before the final summary line.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_engine::progress::Progress;
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::Global;

/// How progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bar,
    Lines,
    Json,
}

/// Shows `progress` while alive; stops (and clears the bar) when dropped.
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A snapshot of the counters, with rate and estimate.
struct Status {
    elapsed: Duration,
    entries: u64,
    bytes: u64,
    errors: u64,
    total_entries: u64,
    total_bytes: u64,
    current: String,
}

impl Status {
    fn read(progress: &Progress, started: Instant) -> Status {
        Status {
            elapsed: started.elapsed(),
            entries: Progress::get(&progress.entries),
            bytes: Progress::get(&progress.bytes),
            errors: Progress::get(&progress.errors),
            total_entries: Progress::get(&progress.total_entries),
            total_bytes: Progress::get(&progress.total_bytes),
            current: progress.current(),
        }
    }

    fn rate(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// Share done, from bytes when their total is known, else from entries.
    fn fraction(&self) -> Option<f64> {
        match (self.total_bytes, self.total_entries) {
            (0, 0) => None,
            (0, n) => Some((self.entries as f64 / n as f64).min(1.0)),
            (b, _) => Some((self.bytes as f64 / b as f64).min(1.0)),
        }
    }

    fn eta(&self) -> Option<Duration> {
        let f = self.fraction()?;
        (f > 0.0).then(|| self.elapsed.mul_f64((1.0 - f) / f))
    }

    fn line(&self, verb: &str) -> String {
        let mut s = format!(
            "{verb} {} entries, {} ({}/s), {} errors",
            self.entries,
            HumanBytes(self.bytes),
            HumanBytes(self.rate() as u64),
            self.errors
        );
        if let (Some(f), Some(eta)) = (self.fraction(), self.eta()) {
            s += &format!(", {:.1}% done, ETA {}", f * 100.0, HumanDuration(eta));
        }
        s
    }

    fn event(&self, command: &str) -> serde_json::Value {
        json!({
            "message_type": "status",
            "command": command,
            "seconds_elapsed": self.elapsed.as_secs_f64(),
            "entries_done": self.entries,
            "bytes_done": self.bytes,
            "errors": self.errors,
            "total_entries": self.total_entries,
            "total_bytes": self.total_bytes,
            "percent_done": self.fraction().map(|f| f * 100.0),
            "seconds_remaining": self.eta().map(|d| d.as_secs_f64()),
            "current": self.current,
        })
    }
}

impl Display {
    /// Starts showing `progress` of `command` ("backup") with `verb` ("backed up"), as `g`
    /// asks: nothing with `--quiet`, events with `--json`, else a bar or plain lines.
    pub fn start(
        progress: Arc<Progress>,
        command: &'static str,
        verb: &'static str,
        g: &Global,
    ) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        let mode = match (g.quiet, g.json, std::io::stderr().is_terminal()) {
            (true, _, _) => None,
            (false, true, _) => Some(Mode::Json),
            (false, false, true) => Some(Mode::Bar),
            (false, false, false) => Some(Mode::Lines),
        };
        let interval = g.progress_interval.unwrap_or(match mode {
            Some(Mode::Bar) => Duration::from_millis(200),
            _ => Duration::from_secs(10),
        });
        let thread = mode.map(|mode| {
            let stop = stop.clone();
            std::thread::spawn(move || show(&progress, mode, command, verb, interval, &stop))
        });
        Display { stop, thread }
    }
}

fn show(
    progress: &Progress,
    mode: Mode,
    command: &str,
    verb: &str,
    interval: Duration,
    stop: &AtomicBool,
) {
    let started = Instant::now();
    let bar = (mode == Mode::Bar).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("valid template"),
        );
        bar
    });
    let mut next = started + interval;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(interval));
        if Instant::now() < next {
            continue;
        }
        next += interval;
        let status = Status::read(progress, started);
        match (&bar, mode) {
            (Some(bar), _) => {
                if let Some(f) = status.fraction() {
                    if bar.length().is_none() {
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{spinner} [{elapsed_precise}] {bar:25} {msg}",
                            )
                            .expect("valid template"),
                        );
                        bar.set_length(1000);
                    }
                    bar.set_position((f * 1000.0) as u64);
                }
                bar.set_message(format!("{}  {}", status.line(verb), status.current));
                bar.tick();
            }
            (None, Mode::Json) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", status.event(command));
            }
            (None, _) => eprintln!("{}", status.line(verb)),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
