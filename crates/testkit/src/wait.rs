//! Bounded waiting. Tests never sleep for "long enough"; they poll a condition until a
//! deadline and fail with a message naming what they waited for.

use std::{future::Future, time::Duration};

/// Polls `check` every `every` until it returns `Ok(Some(v))`, or fails after `timeout` with
/// the last error (or `None`) seen, and `what` in the message.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let last =
            match tokio::time::timeout(remaining.max(Duration::from_millis(1)), check()).await {
                Ok(Ok(Some(v))) => return Ok(v),
                Ok(Ok(None)) => String::from("condition not met yet"),
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => String::from("the check itself did not return in time"),
            };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(
            every.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
        )
        .await;
    }
}

/// Runs `fut` with a deadline; a timeout is an error naming `what`.
pub async fn bounded<T>(
    what: &str,
    timeout: Duration,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {timeout:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_until_returns_the_value_or_the_last_error() {
        let mut n = 0;
        let v = wait_until(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let cur = n;
                async move { Ok((cur >= 3).then_some(cur)) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);

        let e = wait_until::<(), _, _>(
            "the impossible",
            Duration::from_millis(50),
            Duration::from_millis(5),
            || async { anyhow::bail!("still broken") },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("the impossible") && e.contains("still broken"),
            "{e}"
        );

        let e = bounded(
            "a hang",
            Duration::from_millis(10),
            std::future::pending::<()>(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("a hang"), "{e}");
    }
}
