//! Bounded capture of a playbook's stdout and stderr.
//!
//! The guest may write as much as it likes; the host keeps the first
//! `limit` bytes, counts the rest, and never blocks or traps the guest for
//! it. What was kept goes to the audit log at the end of the phase, with
//! the total and whether it was truncated.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write the guest is offered at once (the `check-write` permit).
const WRITE_PERMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<Captured>>,
}

/// What a stream captured.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    pub kept: Vec<u8>,
    pub total: u64,
    limit: usize,
}

impl Captured {
    pub fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.total += bytes.len() as u64;
    }
}

impl Capture {
    pub fn new(limit: usize) -> Capture {
        Capture { inner: Arc::new(Mutex::new(Captured { limit, ..Captured::default() })) }
    }

    /// What was captured so far.
    pub fn captured(&self) -> Captured {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.lock().take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.lock().take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_prefix_and_counts_everything() {
        let mut capture = Capture::new(8);
        capture.write(bytes::Bytes::from_static(b"hello ")).unwrap();
        capture.write(bytes::Bytes::from_static(b"world, again")).unwrap();
        let captured = capture.captured();
        assert_eq!(captured.kept, b"hello wo");
        assert_eq!(captured.total, 18);
        assert!(captured.truncated());
    }
}
