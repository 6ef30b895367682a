//! The Watch service: one bidi stream carries many watchers, each fed by a backend
//! [`WatchFeed`](crate::backend::WatchFeed).
//!
//! One task per stream owns every watcher's state and polls the client's requests, all feeds
//! (a `StreamMap`) and a progress ticker, so a cancel takes effect between two responses and
//! a watcher's responses always follow its `created` ack.

use crate::backend::{BackendError, EtcdBackend, Header, WatchMessage};
use crate::convert::{event_to_pb, header};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::watch_server;
use crate::service::{BoxStream, EtcdService};
use shoal_kv::{EventKind, KvError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

/// etcd's `clientv3.InvalidWatchID`: the id of progress responses to a `ProgressRequest`.
const ALL_WATCHERS: i64 = -1;

/// etcd `mvcc.ErrWatcherDuplicateID`.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

struct Watcher {
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    /// Every event up to here has been sent (or filtered out).
    progress: i64,
    last_sent: Instant,
}

#[tonic::async_trait]
impl watch_server::Watch for EtcdService {
    type WatchStream = BoxStream<pb::WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.check_leader(&request)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let session = Session {
            backend: self.backend.clone(),
            interval: self.config.progress_interval,
            tx,
            watchers: HashMap::new(),
            feeds: StreamMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

struct Session {
    backend: Arc<dyn EtcdBackend>,
    interval: Duration,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    watchers: HashMap<i64, Watcher>,
    feeds: StreamMap<i64, crate::backend::WatchFeed>,
    next_id: i64,
}

/// Whether the client is still there.
type Alive = bool;

impl Session {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        let h: Header = self.backend.header();
        header(h, revision.max(h.revision))
    }

    /// Sends through the field only: `&self` across an await would need `Session: Sync`.
    fn send(&self, resp: pb::WatchResponse) -> impl std::future::Future<Output = Alive> + Send + 'static {
        let tx = self.tx.clone();
        async move { tx.send(Ok(resp)).await.is_ok() }
    }

    async fn run(mut self, mut inbound: Streaming<pb::WatchRequest>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut requests_open = true;
        let out = self.tx.clone();
        loop {
            let alive = tokio::select! {
                req = inbound.next(), if requests_open => match req {
                    Some(Ok(req)) => self.request(req).await,
                    // The client finished sending (a half-close): like etcd, its watchers go on.
                    None => {
                        requests_open = false;
                        true
                    }
                    // The connection broke.
                    Some(Err(_)) => false,
                },
                Some((id, msg)) = self.feeds.next(), if !self.feeds.is_empty() => self.feed(id, msg).await,
                _ = ticker.tick() => self.progress_notify().await,
                // The client is gone (its response stream was dropped).
                () = out.closed() => false,
            };
            if !alive {
                return;
            }
        }
    }

    async fn request(&mut self, req: pb::WatchRequest) -> Alive {
        use pb::watch_request::RequestUnion as U;
        match req.request_union {
            Some(U::CreateRequest(c)) => self.create(c).await,
            Some(U::CancelRequest(c)) => {
                let id = c.watch_id;
                if self.watchers.remove(&id).is_some() {
                    self.feeds.remove(&id);
                    let rev = self.backend.header().revision;
                    return self
                        .send(pb::WatchResponse {
                            header: self.header(rev),
                            watch_id: id,
                            canceled: true,
                            ..Default::default()
                        })
                        .await;
                }
                true
            }
            Some(U::ProgressRequest(_)) => {
                // Progress for the whole stream: the revision every watcher has reached.
                let rev = self
                    .watchers
                    .values()
                    .map(|w| w.progress)
                    .min()
                    .unwrap_or(self.backend.header().revision);
                let h = self.backend.header();
                self.send(pb::WatchResponse {
                    header: header(h, rev),
                    watch_id: ALL_WATCHERS,
                    ..Default::default()
                })
                .await
            }
            None => true,
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Alive {
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                let rev = self.backend.header().revision;
                return self
                    .send(pb::WatchResponse {
                        header: self.header(rev),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: DUPLICATE_ID.to_string(),
                        ..Default::default()
                    })
                    .await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        // etcd (v3rpc/watch.go): an empty key is "\0", the smallest key; a range end of "\0"
        // means "every key from `key` on".
        let key = if c.key.is_empty() { vec![0] } else { c.key };
        use pb::watch_create_request::FilterType;
        let no_put = c.filters.contains(&(FilterType::Noput as i32));
        let no_delete = c.filters.contains(&(FilterType::Nodelete as i32));
        let now = self.backend.header().revision;
        // Progress before any message from the feed: for "now", the revision read before the
        // feed starts (events after it are all still to come); else the one before the start.
        let progress = if c.start_revision > 0 { c.start_revision - 1 } else { now };
        let feed = self.backend.watch(c.start_revision.max(0), key, c.range_end).await;
        let created =
            pb::WatchResponse { header: self.header(now), watch_id: id, created: true, ..Default::default() };
        match feed {
            Ok(feed) => {
                if !self.send(created).await {
                    return false;
                }
                self.watchers.insert(
                    id,
                    Watcher {
                        prev_kv: c.prev_kv,
                        no_put,
                        no_delete,
                        progress_notify: c.progress_notify,
                        progress,
                        last_sent: Instant::now(),
                    },
                );
                self.feeds.insert(id, feed);
                if id == self.next_id {
                    self.next_id += 1;
                }
                true
            }
            Err(BackendError::Kv(KvError::Compacted { compact_revision })) => {
                self.send(created).await && self.send(compacted(self.header(now), id, compact_revision)).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "etcd watch could not start");
                self.send(pb::WatchResponse { canceled: true, cancel_reason: e.to_string(), ..created }).await
            }
        }
    }

    async fn feed(&mut self, id: i64, msg: WatchMessage) -> Alive {
        let rev = self.backend.header().revision;
        let Some(w) = self.watchers.get_mut(&id) else { return true };
        match msg {
            WatchMessage::Events { revision, events } => {
                w.progress = w.progress.max(revision);
                let (prev_kv, no_put, no_delete) = (w.prev_kv, w.no_put, w.no_delete);
                let events: Vec<_> = events
                    .into_iter()
                    .filter(|e| match e.kind {
                        EventKind::Put => !no_put,
                        EventKind::Delete => !no_delete,
                    })
                    .map(|e| event_to_pb(e, prev_kv))
                    .collect();
                if events.is_empty() {
                    return true;
                }
                w.last_sent = Instant::now();
                let resp = pb::WatchResponse {
                    header: self.header(rev.max(revision)),
                    watch_id: id,
                    events,
                    ..Default::default()
                };
                self.send(resp).await
            }
            WatchMessage::Progress { revision } => {
                w.progress = w.progress.max(revision);
                true
            }
            WatchMessage::Compacted { compact_revision } => {
                self.watchers.remove(&id);
                self.feeds.remove(&id);
                self.send(compacted(self.header(rev), id, compact_revision)).await
            }
            WatchMessage::Error(e) => {
                tracing::debug!(error = %e, watch_id = id, "etcd watch feed failed");
                let _ = self.tx.send(Err(Status::from(e))).await;
                false
            }
        }
    }

    /// Watchers created with `progress_notify` that sent nothing for a whole interval get an
    /// empty response whose header revision is their progress.
    async fn progress_notify(&mut self) -> Alive {
        let h = self.backend.header();
        let now = Instant::now();
        let mut due = Vec::new();
        for (&id, w) in self.watchers.iter_mut() {
            if w.progress_notify && now.duration_since(w.last_sent) >= self.interval.mul_f32(0.9) {
                w.last_sent = now;
                due.push(pb::WatchResponse {
                    header: header(h, w.progress),
                    watch_id: id,
                    ..Default::default()
                });
            }
        }
        for resp in due {
            if !self.send(resp).await {
                return false;
            }
        }
        true
    }
}

/// etcd 3.4: a watcher whose history is gone is canceled with the compaction revision (and an
/// empty `cancel_reason`); clients treat it as canceled.
fn compacted(header: Option<pb::ResponseHeader>, id: i64, compact_revision: i64) -> pb::WatchResponse {
    pb::WatchResponse { header, watch_id: id, canceled: true, compact_revision, ..Default::default() }
}
