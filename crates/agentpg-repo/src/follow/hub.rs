//! The followers of one process share what can be shared: one listening connection per set of
//! connect options (a hub), one wake-up counter per followed session, and the last read of
//! each session, which every follower at the same place reuses until the next wake-up.
//!
//! PostgreSQL wakes every listening backend of a database on every notification, whatever its
//! channel, and a read per follower per append costs the writers the same again: a hundred
//! followers, each with its own connection and its own reads, took a writer's rate from about
//! 1,100 appends a second to 34 (`cargo xtask bench follow`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{mpsc, oneshot, watch};

use super::{FollowCursor, Followed};
use crate::error::Result;

/// What followers ask of a hub's task.
enum Command {
    /// Listen on a channel (if not yet) and send back its wake-up counter.
    Listen {
        channel: String,
        reply: oneshot::Sender<sqlx::Result<watch::Receiver<u64>>>,
    },
    /// One follower fewer on a channel.
    Unlisten { channel: String },
}

/// One listening connection and the channels it listens on, for followers with the same
/// connect options.
struct Hub {
    commands: mpsc::UnboundedSender<Command>,
    sessions: Mutex<HashMap<String, Weak<Session>>>,
}

/// A followed session, shared by its followers in this process.
pub(super) struct Session {
    hub: Arc<Hub>,
    channel: String,
    /// The last read of the session, and the single flight of reads: a follower reads while
    /// holding it, so followers at the same place read once.
    pub(super) last_read: tokio::sync::Mutex<Option<LastRead>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.hub.commands.send(Command::Unlisten {
            channel: self.channel.clone(),
        });
    }
}

/// A read of a session: from `from`, what one statement saw while the wake-up counter was
/// `generation`.
pub(super) struct LastRead {
    pub(super) generation: u64,
    pub(super) from: FollowCursor,
    pub(super) events: Vec<Followed>,
    /// The events are all the statement saw (no limit cut it short).
    pub(super) complete: bool,
}

impl LastRead {
    /// The events after `cursor`, if `cursor` is where this read started, or where one of its
    /// events ends and more follow it. (After its last event the read tells nothing: it may
    /// have stopped at its limit.)
    pub(super) fn after(&self, cursor: FollowCursor) -> Option<Vec<Followed>> {
        if cursor == self.from {
            return Some(self.events.clone());
        }
        let at = self.events.iter().position(|f| f.cursor == cursor)?;
        let rest = &self.events[at + 1..];
        (!rest.is_empty()).then(|| rest.to_vec())
    }
}

/// A follower's subscription: its session and its wake-ups.
pub(super) struct Subscription {
    pub(super) session: Arc<Session>,
    pub(super) wakeups: watch::Receiver<u64>,
}

fn hubs() -> &'static Mutex<HashMap<String, Weak<Hub>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Weak<Hub>>>> = OnceLock::new();
    HUBS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Subscribes to `channel` (listening on it before this returns) through the hub of
/// `options`, started if there is none.
pub(super) async fn subscribe(options: &PgConnectOptions, channel: &str) -> Result<Subscription> {
    // Connect options have no identity of their own; their whole description (host, port,
    // database, role, settings) tells which followers may share a connection.
    let key = format!("{options:?}");
    let hub = {
        let mut hubs = hubs().lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|_, hub| hub.strong_count() > 0);
        match hubs.get(&key).and_then(Weak::upgrade) {
            Some(hub) if !hub.commands.is_closed() => hub,
            _ => {
                let (commands, receiver) = mpsc::unbounded_channel();
                tokio::spawn(run(options.clone(), receiver));
                let hub = Arc::new(Hub {
                    commands,
                    sessions: Mutex::new(HashMap::new()),
                });
                hubs.insert(key, Arc::downgrade(&hub));
                hub
            }
        }
    };
    let (reply, answer) = oneshot::channel();
    hub.commands
        .send(Command::Listen {
            channel: channel.to_owned(),
            reply,
        })
        .map_err(|_| gone())?;
    let wakeups = answer.await.map_err(|_| gone())??;
    let session = {
        let mut sessions = hub.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.strong_count() > 0);
        match sessions.get(channel).and_then(Weak::upgrade) {
            Some(session) => {
                // This follower's Listen counted once more: the shared session unlistens once.
                let _ = hub.commands.send(Command::Unlisten {
                    channel: channel.to_owned(),
                });
                session
            }
            None => {
                let session = Arc::new(Session {
                    hub: hub.clone(),
                    channel: channel.to_owned(),
                    last_read: tokio::sync::Mutex::new(None),
                });
                sessions.insert(channel.to_owned(), Arc::downgrade(&session));
                session
            }
        }
    };
    Ok(Subscription { session, wakeups })
}

fn gone() -> crate::error::Error {
    crate::error::Error::Database(sqlx::Error::PoolClosed)
}

/// The pause before the hub connects again after losing its connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// The hub's task: listens, counts each channel's notifications, and ends when no follower
/// holds the hub any more. A lost connection counts as a wake-up of every channel (what was
/// notified meanwhile is lost), and the channels are listened on again.
async fn run(options: PgConnectOptions, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut channels: HashMap<String, (watch::Sender<u64>, usize)> = HashMap::new();
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() && !channels.is_empty() {
            match connect(&options, channels.keys()).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "follow: the listening connection failed");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
            // Whatever was notified while nobody listened: every follower reads again.
            for (sender, _) in channels.values() {
                sender.send_modify(|g| *g += 1);
            }
            continue;
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.try_recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Listen { channel, reply }) => {
                    let answer = listen(&options, &mut listener, &mut channels, channel).await;
                    let _ = reply.send(answer);
                }
                Some(Command::Unlisten { channel }) => {
                    if let Some((_, count)) = channels.get_mut(&channel) {
                        *count -= 1;
                        if *count == 0 {
                            channels.remove(&channel);
                            if let Some(l) = listener.as_mut() {
                                if l.unlisten(&channel).await.is_err() {
                                    listener = None;
                                }
                            }
                        }
                    }
                }
            },
            notification = notified => match notification {
                Ok(Some(n)) => {
                    if let Some((sender, _)) = channels.get(n.channel()) {
                        sender.send_modify(|g| *g += 1);
                    }
                }
                // Lost and made again (sqlx listens again): notifications may be lost.
                Ok(None) => {
                    for (sender, _) in channels.values() {
                        sender.send_modify(|g| *g += 1);
                    }
                }
                Err(_) => listener = None,
            },
        }
    }
}

/// A listening connection of its own (outside any pool of the caller's), on `channels`.
async fn connect<'a>(
    options: &PgConnectOptions,
    channels: impl Iterator<Item = &'a String>,
) -> sqlx::Result<PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&own).await?;
    // Not the pool's to close: the listener's connection lives as long as the hub.
    listener.ignore_pool_close_event(true);
    let channels: Vec<&str> = channels.map(String::as_str).collect();
    if !channels.is_empty() {
        listener.listen_all(channels).await?;
    }
    Ok(listener)
}

/// Listens on `channel` (once, however many followers ask) and returns its wake-up counter.
async fn listen(
    options: &PgConnectOptions,
    listener: &mut Option<PgListener>,
    channels: &mut HashMap<String, (watch::Sender<u64>, usize)>,
    channel: String,
) -> sqlx::Result<watch::Receiver<u64>> {
    if let Some((sender, count)) = channels.get_mut(&channel) {
        *count += 1;
        return Ok(sender.subscribe());
    }
    if listener.is_none() {
        *listener = Some(connect(options, std::iter::empty()).await?);
    }
    let Some(l) = listener.as_mut() else {
        return Err(sqlx::Error::PoolClosed);
    };
    if let Err(e) = l.listen(&channel).await {
        *listener = None;
        return Err(e);
    }
    let (sender, receiver) = watch::channel(0);
    channels.insert(channel, (sender, 1));
    Ok(receiver)
}
