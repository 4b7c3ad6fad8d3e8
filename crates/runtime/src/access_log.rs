//! Writing access-log lines to stdout without ever holding up a request.
//!
//! Owns the writer: a dedicated thread fed by a bounded queue. A request hands its line over
//! and goes on; the thread writes what is queued, several lines per `write(2)`. When stdout
//! does not take lines as fast as they come (a pipe nobody reads, a stalled log collector),
//! the queue fills and further lines are dropped and counted in
//! `meshguard_access_log_dropped_total`, rather than stalling every request behind a blocked
//! write. Does not own what a line says (each front end builds its own).

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use prometheus_client::metrics::counter::Counter;

/// Lines waiting for the writer at most: about 400 KB of typical lines, several seconds of a
/// log collector's hiccup at thousands of requests per second.
pub const QUEUE_LINES: usize = 1024;

/// Bytes gathered into one write at most.
const BATCH_BYTES: usize = 64 * 1024;

/// The request side of the writer. Dropping every handle ends the writer thread once it has
/// written what is queued.
#[derive(Debug)]
pub struct AccessLog {
    lines: SyncSender<Vec<u8>>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer thread, writing to stdout.
    pub fn start(dropped: Counter) -> std::io::Result<AccessLog> {
        let (lines, rx) = sync_channel(QUEUE_LINES);
        let counter = dropped.clone();
        std::thread::Builder::new()
            .name("meshguard-access-log".into())
            .spawn(move || write_lines(&rx, &mut std::io::stdout(), &counter))?;
        Ok(AccessLog { lines, dropped })
    }

    /// Queues one line (with its `\n`); drops and counts it when the queue is full.
    pub fn write(&self, line: Vec<u8>) {
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// The writer thread: takes what is queued, up to [`BATCH_BYTES`], and writes it at once.
/// Lines a failed write lost are counted as dropped.
fn write_lines(rx: &Receiver<Vec<u8>>, out: &mut impl Write, dropped: &Counter) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(line) = rx.recv() {
        batch.clear();
        batch.extend_from_slice(&line);
        let mut n = 1;
        while batch.len() < BATCH_BYTES {
            match rx.try_recv() {
                Ok(line) => {
                    batch.extend_from_slice(&line);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            dropped.inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (lines, rx) = sync_channel(2);
        let dropped = Counter::default();
        let log = AccessLog {
            lines,
            dropped: dropped.clone(),
        };
        for i in 0..5 {
            log.write(format!("{i}\n").into_bytes());
        }
        assert_eq!(dropped.get(), 3);
        drop(log);
        let mut out = Vec::new();
        write_lines(&rx, &mut out, &dropped);
        assert_eq!(out, b"0\n1\n");
    }
}
