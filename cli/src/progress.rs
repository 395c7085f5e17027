//! Progress display on a terminal: a spinner line fed from the engine's counters.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_engine::progress::Progress;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Shows `progress` on standard error while alive (only on a terminal, and not with `--quiet`
/// or `--json`).
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    /// Starts showing `progress` with `verb` ("backed up", "restored").
    pub fn start(progress: Arc<Progress>, verb: &'static str, enabled: bool) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (enabled && std::io::stderr().is_terminal()).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                        .expect("valid template"),
                );
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let bytes = Progress::get(&progress.bytes);
                    let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
                    bar.set_message(format!(
                        "{verb} {} entries, {} ({}/s), {} errors  {}",
                        Progress::get(&progress.entries),
                        HumanBytes(bytes),
                        HumanBytes(rate as u64),
                        Progress::get(&progress.errors),
                        progress.current()
                    ));
                    bar.tick();
                    std::thread::sleep(Duration::from_millis(200));
                }
                bar.finish_and_clear();
            })
        });
        Display { stop, thread }
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
