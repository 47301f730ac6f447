//! Signals as events: SIGTERM/SIGINT drain and stop, SIGHUP reloads the labels.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};

/// What the daemon loop is told from outside: the binary maps signals onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// SIGTERM/SIGINT: drain and return.
    Shutdown,
    /// SIGHUP: reload the labels file and prompt templates.
    Reload,
}

/// Turn SIGTERM/SIGINT/SIGHUP into [`ControlEvent`]s. A second SIGTERM or SIGINT while the
/// first is draining exits the process at once with status 130: the operator insists.
pub fn listen_for_signals() -> std::io::Result<Receiver<ControlEvent>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let insisted = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Order matters: the conditional exit must see the flag set by an earlier signal,
        // so it is registered before the handler that sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, insisted.clone())?;
        signal_hook::flag::register(signal, insisted.clone())?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = bounded(16);
    std::thread::Builder::new()
        .name("cliptag-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let event = if signal == SIGHUP {
                    ControlEvent::Reload
                } else {
                    ControlEvent::Shutdown
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}
