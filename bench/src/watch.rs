//! Watching what sqlx does while a future runs: a tracing subscriber that hands each event of
//! one target to a closure (statements counted, statement texts or server notices collected).

use std::future::Future;

/// A subscriber that hands each event whose target is `target` to `on_event`.
struct OnEvent<F> {
    target: &'static str,
    on_event: F,
}

impl<F: Fn(&tracing::Event<'_>) + Send + Sync + 'static> tracing::Subscriber for OnEvent<F> {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == self.target
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == self.target {
            (self.on_event)(event);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `f` with every event of `target` (on this thread) handed to `on_event`.
pub(crate) async fn watching<T>(
    target: &'static str,
    on_event: impl Fn(&tracing::Event<'_>) + Send + Sync + 'static,
    f: impl Future<Output = T>,
) -> T {
    let dispatch = tracing::Dispatch::new(OnEvent { target, on_event });
    let guard = tracing::dispatcher::set_default(&dispatch);
    tracing::callsite::rebuild_interest_cache();
    let out = f.await;
    drop(guard);
    tracing::callsite::rebuild_interest_cache();
    out
}

/// The text of field `name` of `event`, if it has one.
pub(crate) fn field(event: &tracing::Event<'_>, name: &str) -> Option<String> {
    struct Field<'a> {
        name: &'a str,
        value: Option<String>,
    }
    impl tracing::field::Visit for Field<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == self.name {
                self.value = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == self.name {
                self.value = Some(format!("{value:?}"));
            }
        }
    }
    let mut visit = Field { name, value: None };
    event.record(&mut visit);
    visit.value
}
