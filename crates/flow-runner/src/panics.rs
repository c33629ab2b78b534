//! Panics in stage code are caught per call and become that item's error
//! (counted, handled by `on_error`); they never take a worker down or hang
//! the run.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

thread_local! {
    /// Set while stage code runs on this thread.
    static IN_STAGE: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic in stage code happened.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that keeps quiet about panics
/// in stage calls (the runner reports them as item errors, with their
/// location) and passes every other panic to the hook that was there.
pub fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_STAGE.get() {
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()));
                LOCATION.set(at);
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs stage code, catching a panic as its message.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let was = IN_STAGE.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_STAGE.set(was);
    result.map_err(|payload| {
        let at = LOCATION
            .take()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        format!("panicked: {}{at}", message(&*payload))
    })
}

/// The text a panic was raised with.
pub fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// A future whose every poll runs under [`catch`].
pub struct CatchUnwind<F>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match catch(|| Pin::new(inner).poll(cx)) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(message) => Poll::Ready(Err(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_gives_its_message_and_location() {
        install_hook();
        let err = catch(|| -> u32 { panic!("bad item {}", 7) }).unwrap_err();
        assert!(err.starts_with("panicked: bad item 7 at "), "{err}");
        assert!(err.contains("panics.rs"), "{err}");
        assert_eq!(catch(|| 5).unwrap(), 5);
    }

    #[tokio::test]
    async fn a_panicking_future_resolves_to_its_message() {
        install_hook();
        let fut: Pin<Box<dyn Future<Output = u32> + Send>> = Box::pin(async {
            tokio::task::yield_now().await;
            panic!("late")
        });
        let err = CatchUnwind(fut).await.unwrap_err();
        assert!(err.starts_with("panicked: late"), "{err}");
    }
}
