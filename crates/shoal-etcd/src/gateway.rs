//! etcd's grpc-gateway: the v3 API as JSON over HTTP/1.1 or HTTP/2 (`curl -X POST
//! :2379/v3/kv/range -d '{"key":"Zm9v"}'`), on the same listener as gRPC, answering what etcd
//! 3.4.23 answers (design note `kv-etcd.md` §1.5).
//!
//! It only translates: each path calls the same tonic service method gRPC clients reach
//! ([`EtcdService`]), with the request decoded from JSON and the response encoded to JSON by
//! [`crate::jsonpb`] (jsonpb's rules and error messages). What etcd's gateway does around that
//! is copied too: `/v3/…` and `/v3beta/…`, POST only, errors as
//! `{"error":…,"message":…,"code":N}` with grpc-gateway v1's HTTP status for the code, streams
//! as newline-separated `{"result":…}` objects, `GET /health` and `GET /version`.
//!
//! Deliberate differences from etcd:
//! * etcd sends `Access-Control-Allow-Origin: *` (any web page may read the store through a
//!   visitor's browser, and a plain-text POST needs no preflight, so may write it). Shoal sends
//!   no CORS headers and refuses any request carrying an `Origin` header (403): browsers always
//!   send one on a POST, curl and client libraries do not.
//! * Auth, Lock and Election are not served by Shoal's gRPC API either; their paths answer
//!   Unimplemented.
//! * The websocket variant of `/v3/watch` (etcd wraps its gateway in a websocket proxy) is not
//!   served.

use crate::gojson::{Next, ValueReader};
use crate::jsonpb::{self, JsonError};
use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::server::PeerRole;
use crate::service::{BoxStream, EtcdService};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use shoal_api::roles::ClientRole;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::codec::{BufferSettings, Streaming};
use tonic::metadata::{AsciiMetadataValue, MetadataKey, MetadataMap};
use tonic::Status;

/// The largest JSON body read: base64 and JSON around the largest gRPC message the API takes.
const MAX_BODY_BYTES: usize = 4 * crate::server::MAX_MESSAGE_BYTES;

/// How long `/health`'s read may take (etcd: one second).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A tower layer that serves the gateway in front of tonic's routes: requests whose
/// content-type is gRPC go to the routes, everything else here.
#[derive(Clone)]
pub(crate) struct GatewayLayer {
    svc: EtcdService,
}

impl GatewayLayer {
    pub(crate) fn new(svc: EtcdService) -> Self {
        GatewayLayer { svc }
    }
}

impl<S> tower::Layer<S> for GatewayLayer {
    type Service = Gateway<S>;

    fn layer(&self, inner: S) -> Gateway<S> {
        Gateway { inner, svc: self.svc.clone() }
    }
}

/// See [`GatewayLayer`].
#[derive(Clone)]
pub(crate) struct Gateway<S> {
    inner: S,
    svc: EtcdService,
}

impl<S> tower::Service<http::Request<Body>> for Gateway<S>
where
    S: tower::Service<http::Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // etcd routes by content-type the same way (`grpcHandlerFunc`).
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        // Who is calling (their certificate's client role), checked here for gRPC and in
        // `handle` for the gateway; the services check the bodies of Txn and Alarm.
        let role = crate::server::peer_role(&req);
        if grpc {
            // `/etcdserverpb.KV/Put` → `Put`.
            let rpc = req.uri().path().rsplit('/').next().unwrap_or_default();
            match role.and_then(|r| shoal_api::roles::etcd_allowed(r, rpc).map(|()| r)) {
                Ok(r) => {
                    req.extensions_mut().insert(PeerRole(r));
                    Box::pin(self.inner.call(req))
                }
                Err(why) => {
                    let refused = Status::permission_denied(why).into_http::<Body>();
                    Box::pin(async move { Ok(refused) })
                }
            }
        } else {
            let svc = self.svc.clone();
            Box::pin(async move { Ok(handle(svc, role, req).await) })
        }
    }
}

/// One gateway path: what etcd's `google.api.http` options route to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Watch,
    LeaseGrant,
    LeaseRevoke,
    LeaseKeepAlive,
    LeaseTimeToLive,
    LeaseLeases,
    MemberAdd,
    MemberRemove,
    MemberUpdate,
    MemberList,
    MemberPromote,
    Alarm,
    Status,
    Defragment,
    Hash,
    Snapshot,
    MoveLeader,
    /// A service etcd serves and Shoal does not.
    Unserved(&'static str),
}

impl Rpc {
    /// The gRPC method name (the service's, for an unserved one), for the role check.
    fn name(self) -> &'static str {
        match self {
            Rpc::Range => "Range",
            Rpc::Put => "Put",
            Rpc::DeleteRange => "DeleteRange",
            Rpc::Txn => "Txn",
            Rpc::Compact => "Compact",
            Rpc::Watch => "Watch",
            Rpc::LeaseGrant => "LeaseGrant",
            Rpc::LeaseRevoke => "LeaseRevoke",
            Rpc::LeaseKeepAlive => "LeaseKeepAlive",
            Rpc::LeaseTimeToLive => "LeaseTimeToLive",
            Rpc::LeaseLeases => "LeaseLeases",
            Rpc::MemberAdd => "MemberAdd",
            Rpc::MemberRemove => "MemberRemove",
            Rpc::MemberUpdate => "MemberUpdate",
            Rpc::MemberList => "MemberList",
            Rpc::MemberPromote => "MemberPromote",
            Rpc::Alarm => "Alarm",
            Rpc::Status => "Status",
            Rpc::Defragment => "Defragment",
            Rpc::Hash => "Hash",
            Rpc::Snapshot => "Snapshot",
            Rpc::MoveLeader => "MoveLeader",
            Rpc::Unserved(service) => service,
        }
    }

    /// The RPC behind `/v3/<path>` (etcd 3.4's rpc.proto, v3lock and v3election).
    fn from_path(path: &str) -> Option<Rpc> {
        Some(match path {
            "kv/range" => Rpc::Range,
            "kv/put" => Rpc::Put,
            "kv/deleterange" => Rpc::DeleteRange,
            "kv/txn" => Rpc::Txn,
            "kv/compaction" => Rpc::Compact,
            "watch" => Rpc::Watch,
            "lease/grant" => Rpc::LeaseGrant,
            "lease/revoke" | "kv/lease/revoke" => Rpc::LeaseRevoke,
            "lease/keepalive" => Rpc::LeaseKeepAlive,
            "lease/timetolive" | "kv/lease/timetolive" => Rpc::LeaseTimeToLive,
            "lease/leases" | "kv/lease/leases" => Rpc::LeaseLeases,
            "cluster/member/add" => Rpc::MemberAdd,
            "cluster/member/remove" => Rpc::MemberRemove,
            "cluster/member/update" => Rpc::MemberUpdate,
            "cluster/member/list" => Rpc::MemberList,
            "cluster/member/promote" => Rpc::MemberPromote,
            "maintenance/alarm" => Rpc::Alarm,
            "maintenance/status" => Rpc::Status,
            "maintenance/defragment" => Rpc::Defragment,
            // HashKV has the same path in etcd's proto; Hash, registered first, gets it.
            "maintenance/hash" => Rpc::Hash,
            "maintenance/snapshot" => Rpc::Snapshot,
            "maintenance/transfer-leadership" => Rpc::MoveLeader,
            "auth/enable" | "auth/disable" | "auth/authenticate" | "auth/user/add" | "auth/user/get"
            | "auth/user/list" | "auth/user/delete" | "auth/user/changepw" | "auth/user/grant"
            | "auth/user/revoke" | "auth/role/add" | "auth/role/get" | "auth/role/list"
            | "auth/role/delete" | "auth/role/grant" | "auth/role/revoke" => Rpc::Unserved("Auth"),
            "lock/lock" | "lock/unlock" => Rpc::Unserved("Lock"),
            "election/campaign" | "election/proclaim" | "election/leader" | "election/observe"
            | "election/resign" => Rpc::Unserved("Election"),
            _ => return None,
        })
    }
}

/// The request parts the calls need.
struct Call {
    headers: HeaderMap,
    body: Body,
    role: PeerRole,
}

/// `Name` → the full proto name, for [`jsonpb`].
macro_rules! proto {
    ($name:ident) => {
        concat!("etcdserverpb.", stringify!($name))
    };
}

/// One unary path: the JSON body decoded as `$req`, `$trait::$method` called on the service
/// (the very method tonic routes gRPC calls to), the `$resp` written back as JSON.
macro_rules! unary {
    ($call:expr, $svc:ident, $trait:ident::$method:ident, $req:ident, $resp:ident) => {
        $call
            .unary::<pb::$req, pb::$resp, _, _>(proto!($req), proto!($resp), move |r| async move {
                <EtcdService as $trait>::$method(&$svc, r).await
            })
            .await
    };
}

async fn handle(
    svc: EtcdService,
    role: Result<ClientRole, String>,
    req: http::Request<Body>,
) -> Response<Body> {
    let role = match role {
        Ok(r) => r,
        Err(why) => return error_response(&Status::permission_denied(why), false),
    };
    if req.headers().contains_key(http::header::ORIGIN) {
        return error_response(
            &Status::permission_denied(
                "shoal: the etcd JSON gateway does not answer browsers (requests with an Origin header)",
            ),
            false,
        );
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    match path {
        "/health" | "/version" if parts.method != Method::GET => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
            r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET"));
            return r;
        }
        "/health" => return health(&svc).await,
        "/version" => return version(&svc).await,
        _ => {}
    }
    if path == "/v3" {
        return moved_to_v3(&parts.method);
    }
    let Some(rest) = path.strip_prefix("/v3/").or_else(|| path.strip_prefix("/v3beta/")) else {
        // Go's ServeMux, outside the gateway's prefixes.
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    // grpc-gateway's own answers for paths and methods it has no handler for.
    let Some(rpc) = Rpc::from_path(rest) else {
        return text(StatusCode::NOT_FOUND, "Not Found\n");
    };
    if parts.method != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    if let Err(why) = shoal_api::roles::etcd_allowed(role, rpc.name()) {
        return error_response(&Status::permission_denied(why), false);
    }
    let call = Call { headers: parts.headers, body, role: PeerRole(role) };
    match rpc {
        Rpc::Range => unary!(call, svc, Kv::range, RangeRequest, RangeResponse),
        Rpc::Put => unary!(call, svc, Kv::put, PutRequest, PutResponse),
        Rpc::DeleteRange => unary!(call, svc, Kv::delete_range, DeleteRangeRequest, DeleteRangeResponse),
        Rpc::Txn => unary!(call, svc, Kv::txn, TxnRequest, TxnResponse),
        Rpc::Compact => unary!(call, svc, Kv::compact, CompactionRequest, CompactionResponse),
        Rpc::LeaseGrant => unary!(call, svc, Lease::lease_grant, LeaseGrantRequest, LeaseGrantResponse),
        Rpc::LeaseRevoke => unary!(call, svc, Lease::lease_revoke, LeaseRevokeRequest, LeaseRevokeResponse),
        Rpc::LeaseTimeToLive => {
            unary!(call, svc, Lease::lease_time_to_live, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse)
        }
        Rpc::LeaseLeases => unary!(call, svc, Lease::lease_leases, LeaseLeasesRequest, LeaseLeasesResponse),
        Rpc::MemberAdd => unary!(call, svc, Cluster::member_add, MemberAddRequest, MemberAddResponse),
        Rpc::MemberRemove => {
            unary!(call, svc, Cluster::member_remove, MemberRemoveRequest, MemberRemoveResponse)
        }
        Rpc::MemberUpdate => {
            unary!(call, svc, Cluster::member_update, MemberUpdateRequest, MemberUpdateResponse)
        }
        Rpc::MemberList => unary!(call, svc, Cluster::member_list, MemberListRequest, MemberListResponse),
        Rpc::MemberPromote => {
            unary!(call, svc, Cluster::member_promote, MemberPromoteRequest, MemberPromoteResponse)
        }
        Rpc::Alarm => unary!(call, svc, Maintenance::alarm, AlarmRequest, AlarmResponse),
        Rpc::Status => unary!(call, svc, Maintenance::status, StatusRequest, StatusResponse),
        Rpc::Defragment => unary!(call, svc, Maintenance::defragment, DefragmentRequest, DefragmentResponse),
        Rpc::Hash => unary!(call, svc, Maintenance::hash, HashRequest, HashResponse),
        Rpc::MoveLeader => unary!(call, svc, Maintenance::move_leader, MoveLeaderRequest, MoveLeaderResponse),
        Rpc::Snapshot => {
            call.server_stream::<pb::SnapshotRequest, pb::SnapshotResponse, _, _, _>(
                proto!(SnapshotRequest),
                proto!(SnapshotResponse),
                move |r| async move { Maintenance::snapshot(&svc, r).await },
            )
            .await
        }
        // etcd's watch server ignores the client closing its side: a curl whose body has been
        // sent still gets events. Shoal's watch stream ends then, so the request side is kept
        // open until the HTTP client goes away.
        Rpc::Watch => {
            call.bidi::<pb::WatchRequest, pb::WatchResponse, _, _, _>(
                proto!(WatchRequest),
                proto!(WatchResponse),
                true,
                move |r| async move { Watch::watch(&svc, r).await },
            )
            .await
        }
        // LeaseKeepAlive ends when the client's requests end, in etcd and in Shoal.
        Rpc::LeaseKeepAlive => {
            call.bidi::<pb::LeaseKeepAliveRequest, pb::LeaseKeepAliveResponse, _, _, _>(
                proto!(LeaseKeepAliveRequest),
                proto!(LeaseKeepAliveResponse),
                false,
                move |r| async move { Lease::lease_keep_alive(&svc, r).await },
            )
            .await
        }
        Rpc::Unserved(service) => error_response(
            &Status::unimplemented(format!("shoal: {service} is not supported by Shoal's etcd API")),
            true,
        ),
    }
}

impl Call {
    /// The request as a tonic request: grpc-gateway forwards `Grpc-Metadata-*` headers (prefix
    /// removed) and `Authorization` as gRPC metadata (e.g. `Grpc-Metadata-Hasleader: true`).
    /// The caller's role travels in the extensions, as on a gRPC request.
    fn request<T>(headers: &HeaderMap, role: PeerRole, message: T) -> tonic::Request<T> {
        let mut md = MetadataMap::new();
        for (name, value) in headers {
            let name = name.as_str();
            let key = match name.strip_prefix("grpc-metadata-") {
                Some(k) => k,
                None if name == "authorization" => name,
                None => continue,
            };
            if let (Ok(k), Ok(v)) =
                (MetadataKey::from_bytes(key.as_bytes()), AsciiMetadataValue::try_from(value.as_bytes()))
            {
                md.append(k, v);
            }
        }
        let mut extensions = tonic::Extensions::default();
        extensions.insert(role);
        tonic::Request::from_parts(md, extensions, message)
    }

    /// The body's first JSON value decoded as `Req` (an empty body is an empty request), or
    /// the error response for it.
    async fn read<Req: prost::Message + Default>(
        self,
        name: &str,
    ) -> Result<(HeaderMap, Req), Response<Body>> {
        let bytes = match http_body_util::Limited::new(self.body, MAX_BODY_BYTES).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return Err(error_response(&Status::invalid_argument(e.to_string()), false)),
        };
        let mut reader = ValueReader::default();
        reader.push(&bytes);
        let raw = match reader.next(true) {
            Next::Value(v) => Some(v),
            Next::Eof | Next::NeedMore => None,
            Next::Error(e) => return Err(error_response(&Status::invalid_argument(e), false)),
        };
        match jsonpb::from_json::<Req>(name, raw.as_deref()) {
            Ok(req) => Ok((self.headers, req)),
            Err(JsonError::Invalid(e)) => Err(error_response(&Status::invalid_argument(e), false)),
            Err(e @ JsonError::Internal(_)) => Err(error_response(&Status::internal(e.to_string()), false)),
        }
    }

    /// A unary call: decode, call the service as a gRPC request would, encode its answer.
    async fn unary<Req, Resp, F, Fut>(self, req_name: &str, resp_name: &str, call: F) -> Response<Body>
    where
        Req: prost::Message + Default,
        Resp: prost::Message,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let role = self.role;
        let (headers, req) = match self.read::<Req>(req_name).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if let Err(s) = check_size(&req) {
            return error_response(&s, true);
        }
        match call(Call::request(&headers, role, req)).await {
            Ok(resp) => match jsonpb::to_json(resp_name, resp.get_ref()) {
                Ok(json) => json_response(json),
                Err(e) => error_response(&Status::internal(e.to_string()), true),
            },
            Err(status) => error_response(&status, true),
        }
    }

    /// A server-streaming call (Snapshot): one request, a stream of answers.
    async fn server_stream<Req, Resp, F, Fut, St>(
        self,
        req_name: &str,
        resp_name: &'static str,
        call: F,
    ) -> Response<Body>
    where
        Req: prost::Message + Default,
        Resp: prost::Message + 'static,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<St>, Status>>,
        St: Stream<Item = Result<Resp, Status>> + Send + 'static,
    {
        let role = self.role;
        let (headers, req) = match self.read::<Req>(req_name).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if let Err(s) = check_size(&req) {
            return error_response(&s, true);
        }
        let (gone, _) = oneshot::channel();
        match call(Call::request(&headers, role, req)).await {
            Ok(stream) => stream_response(resp_name, stream.into_inner(), gone).await,
            Err(status) => error_response(&status, true),
        }
    }

    /// A bidirectional stream (Watch, LeaseKeepAlive): the body is a sequence of JSON requests,
    /// read as they arrive (Go's `json.Decoder`); answers go out as they come. `keep_open`:
    /// the service does not see the end of the body (see the Watch arm in [`handle`]).
    async fn bidi<Req, Resp, F, Fut, St>(
        self,
        req_name: &'static str,
        resp_name: &'static str,
        keep_open: bool,
        call: F,
    ) -> Response<Body>
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + 'static,
        F: FnOnce(tonic::Request<Streaming<Req>>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<St>, Status>>,
        St: Stream<Item = Result<Resp, Status>> + Send + 'static,
    {
        let Call { headers, mut body, role } = self;
        let mut reader = ValueReader::default();
        let mut eof = false;
        // grpc-gateway sends the first request before it opens the call; a failure there is a
        // plain Go error (code Unknown), not InvalidArgument as for unary calls.
        let first = loop {
            match reader.next(eof) {
                Next::Value(v) => break Some(v),
                Next::Eof => break None,
                Next::Error(e) => return error_response(&Status::unknown(e), false),
                Next::NeedMore if reader.buffered() > MAX_BODY_BYTES => {
                    return error_response(&Status::unknown("http: request body too large"), false);
                }
                Next::NeedMore => match body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            reader.push(&d);
                        }
                    }
                    Some(Err(e)) => return error_response(&Status::unknown(e.to_string()), false),
                    None => eof = true,
                },
            }
        };
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
        if let Some(raw) = first {
            let req = match jsonpb::from_json::<Req>(req_name, Some(&raw)) {
                Ok(r) => r,
                Err(e) => return error_response(&Status::unknown(e.to_string()), false),
            };
            // The channel is new and has room.
            let _ = tx.try_send(Ok(Frame::data(grpc_frame(&req))));
        }
        let (gone, gone_rx) = oneshot::channel();
        let pump = Pump { req_name, body, reader, eof, tx, keep_open, gone: gone_rx };
        tokio::spawn(pump.run::<Req>());
        let inbound = Streaming::new_request(
            tonic_prost::ProstDecoder::<Req>::new(BufferSettings::default()),
            StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            None,
            Some(crate::server::MAX_MESSAGE_BYTES),
        );
        match call(Call::request(&headers, role, inbound)).await {
            Ok(stream) => stream_response(resp_name, stream.into_inner(), gone).await,
            Err(status) => error_response(&status, true),
        }
    }
}

/// The service's message limit, which its tonic server enforces on gRPC requests.
fn check_size<T: prost::Message>(req: &T) -> Result<(), Status> {
    let len = req.encoded_len();
    if len > crate::server::MAX_MESSAGE_BYTES {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {})",
            crate::server::MAX_MESSAGE_BYTES
        )));
    }
    Ok(())
}

/// A message in gRPC's length-prefixed framing, for [`Streaming`] to decode.
fn grpc_frame<T: prost::Message>(msg: &T) -> Bytes {
    let len = msg.encoded_len();
    let mut b = BytesMut::with_capacity(5 + len);
    b.put_u8(0);
    b.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // BytesMut grows as needed: encoding cannot fail.
    let _ = msg.encode(&mut b);
    b.freeze()
}

/// Feeds the rest of a streaming request body to the service, one request per JSON value.
struct Pump {
    req_name: &'static str,
    body: Body,
    reader: ValueReader,
    eof: bool,
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    keep_open: bool,
    /// Resolves (with an error) when the HTTP response is dropped: the client is gone.
    gone: oneshot::Receiver<()>,
}

impl Pump {
    async fn run<Req: prost::Message + Default>(mut self) {
        loop {
            match self.reader.next(self.eof) {
                Next::Value(raw) => match jsonpb::from_json::<Req>(self.req_name, Some(&raw)) {
                    Ok(req) => {
                        tokio::select! {
                            r = self.tx.send(Ok(Frame::data(grpc_frame(&req)))) => if r.is_err() { return },
                            _ = &mut self.gone => return,
                        }
                    }
                    Err(e) => {
                        // grpc-gateway logs it and stops sending; the stream goes on.
                        tracing::debug!(error = %e, "etcd JSON gateway: a streamed request is malformed");
                        break;
                    }
                },
                Next::NeedMore if self.reader.buffered() > MAX_BODY_BYTES => break,
                Next::NeedMore => {
                    tokio::select! {
                        f = self.body.frame() => match f {
                            Some(Ok(f)) => {
                                if let Ok(d) = f.into_data() {
                                    self.reader.push(&d);
                                }
                            }
                            Some(Err(_)) | None => self.eof = true,
                        },
                        _ = &mut self.gone => return,
                    }
                }
                Next::Eof => break,
                Next::Error(e) => {
                    tracing::debug!(error = %e, "etcd JSON gateway: a streamed request is malformed");
                    break;
                }
            }
        }
        if self.keep_open {
            tokio::select! {
                _ = &mut self.gone => {}
                _ = self.tx.closed() => {}
            }
        }
    }
}

/// The HTTP answer to a response stream. As grpc-gateway (which waits for the gRPC headers,
/// sent with the first message), nothing is answered before the first message: an error
/// there gets its HTTP status, later ones end the body with an `{"error":…}` object.
async fn stream_response<Resp, St>(
    resp_name: &'static str,
    stream: St,
    gone: oneshot::Sender<()>,
) -> Response<Body>
where
    Resp: prost::Message + 'static,
    St: Stream<Item = Result<Resp, Status>> + Send + 'static,
{
    let mut stream = Box::pin(stream);
    let (status, first) = match stream.next().await {
        None => (StatusCode::OK, None),
        Some(Ok(m)) => match result_chunk(resp_name, &m) {
            Ok(b) => (StatusCode::OK, Some(b)),
            Err(s) => (http_status(s.code()), Some(error_chunk(&s))),
        },
        Some(Err(s)) => (http_status(s.code()), Some(error_chunk(&s))),
    };
    let done = status != StatusCode::OK;
    let chunks = Chunks { first, inner: (!done).then_some(stream), resp_name, _gone: gone };
    let mut r = Response::new(Body::new(StreamBody::new(chunks)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !done {
        h.insert("grpc-metadata-content-type", HeaderValue::from_static("application/grpc"));
    }
    r
}

/// The body of a streamed answer.
struct Chunks<Resp> {
    first: Option<Bytes>,
    inner: Option<BoxStream<Resp>>,
    resp_name: &'static str,
    _gone: oneshot::Sender<()>,
}

impl<Resp: prost::Message> Stream for Chunks<Resp> {
    type Item = Result<Frame<Bytes>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(b) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let chunk = match std::task::ready!(inner.as_mut().poll_next(cx)) {
            None => {
                this.inner = None;
                return Poll::Ready(None);
            }
            Some(Ok(m)) => match result_chunk(this.resp_name, &m) {
                Ok(b) => b,
                Err(s) => {
                    this.inner = None;
                    error_chunk(&s)
                }
            },
            Some(Err(s)) => {
                this.inner = None;
                error_chunk(&s)
            }
        };
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

/// `{"result":…}` and grpc-gateway's delimiter.
fn result_chunk<Resp: prost::Message>(resp_name: &str, msg: &Resp) -> Result<Bytes, Status> {
    let json = jsonpb::to_json(resp_name, msg).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Bytes::from(format!("{{\"result\":{json}}}\n")))
}

/// grpc-gateway v1's stream error (`StreamError` with original field names), not delimited.
fn error_chunk(s: &Status) -> Bytes {
    let http = http_status(s.code());
    let mut out = String::from("{\"error\":{");
    let mut fields = Vec::new();
    if s.code() != tonic::Code::Ok {
        fields.push(format!("\"grpc_code\":{}", s.code() as i32));
    }
    fields.push(format!("\"http_code\":{}", http.as_u16()));
    if !s.message().is_empty() {
        let mut m = String::from("\"message\":");
        crate::gojson::write_string(&mut m, s.message());
        fields.push(m);
    }
    let mut st = String::from("\"http_status\":");
    crate::gojson::write_string(&mut st, http.canonical_reason().unwrap_or(""));
    fields.push(st);
    out.push_str(&fields.join(","));
    out.push_str("}}");
    Bytes::from(out)
}

/// grpc-gateway v1's `HTTPStatusFromCode`.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code as C;
    match code {
        C::Ok => StatusCode::OK,
        C::Cancelled => StatusCode::REQUEST_TIMEOUT,
        C::Unknown | C::Internal | C::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        C::InvalidArgument | C::OutOfRange => StatusCode::BAD_REQUEST,
        C::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        C::NotFound => StatusCode::NOT_FOUND,
        C::AlreadyExists | C::Aborted => StatusCode::CONFLICT,
        C::PermissionDenied => StatusCode::FORBIDDEN,
        C::Unauthenticated => StatusCode::UNAUTHORIZED,
        C::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        C::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        C::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        C::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn json_response(json: String) -> Response<Body> {
    let mut r = Response::new(Body::new(Full::new(Bytes::from(json))));
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("grpc-metadata-content-type", HeaderValue::from_static("application/grpc"));
    r
}

/// grpc-gateway v1's error body. `from_grpc`: the error came back from the call, so (as in
/// etcd) the gRPC trailers are forwarded as HTTP trailers (which hyper sends to clients that
/// accept them, `TE: trailers`).
fn error_response(s: &Status, from_grpc: bool) -> Response<Body> {
    let mut json = String::from("{");
    if !s.message().is_empty() {
        json.push_str("\"error\":");
        crate::gojson::write_string(&mut json, s.message());
        json.push_str(",\"message\":");
        crate::gojson::write_string(&mut json, s.message());
    }
    if s.code() != tonic::Code::Ok {
        if json.len() > 1 {
            json.push(',');
        }
        json.push_str(&format!("\"code\":{}", s.code() as i32));
    }
    json.push('}');
    let body = Bytes::from(json);
    let mut r = if from_grpc {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-trailer-content-type", HeaderValue::from_static("application/grpc"));
        let frames =
            tokio_stream::iter([Ok::<_, Infallible>(Frame::data(body)), Ok(Frame::trailers(trailers))]);
        let mut r = Response::new(Body::new(StreamBody::new(frames)));
        r.headers_mut().insert(http::header::TRAILER, HeaderValue::from_static("Grpc-Trailer-Content-Type"));
        r
    } else {
        Response::new(Body::new(Full::new(body)))
    };
    *r.status_mut() = http_status(s.code());
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Go's ServeMux sends `/v3` to the `/v3/` it has a handler for.
fn moved_to_v3(method: &Method) -> Response<Body> {
    let body: &'static [u8] = if method == Method::GET || method == Method::HEAD {
        b"<a href=\"/v3/\">Moved Permanently</a>.\n\n"
    } else {
        b""
    };
    let mut r = Response::new(Body::new(Full::new(Bytes::from_static(body))));
    *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
    r.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static("/v3/"));
    if !body.is_empty() {
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    }
    r
}

/// Go's `http.Error`.
fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::new(Full::new(Bytes::from_static(body.as_bytes()))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// etcd's `/health`: no alarm, a leader, and a linearizable read that answers within a
/// second, through the same service calls the gRPC API uses.
async fn health(svc: &EtcdService) -> Response<Body> {
    let healthy = async {
        let alarms =
            pb::AlarmRequest { action: pb::alarm_request::AlarmAction::Get as i32, ..Default::default() };
        match Maintenance::alarm(svc, tonic::Request::new(alarms)).await {
            Ok(r) if r.get_ref().alarms.is_empty() => {}
            _ => return false,
        }
        if !svc.backend.has_leader() {
            return false;
        }
        let read = pb::RangeRequest { key: b"health".to_vec(), ..Default::default() };
        matches!(
            tokio::time::timeout(HEALTH_TIMEOUT, Kv::range(svc, tonic::Request::new(read))).await,
            Ok(Ok(_))
        )
    };
    if healthy.await {
        // etcd sets no content-type here; Go's sniffing makes it text/plain.
        let mut r = Response::new(Body::new(Full::new(Bytes::from_static(br#"{"health":"true"}"#))));
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        r
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "{\"health\":\"false\"}\n")
    }
}

/// etcd's `/version`: the server version (what `Status` reports) and the cluster version
/// (its major.minor, etcd's "cluster version").
async fn version(svc: &EtcdService) -> Response<Body> {
    let server = match Maintenance::status(svc, tonic::Request::new(pb::StatusRequest {})).await {
        Ok(r) => r.into_inner().version,
        Err(e) => {
            tracing::debug!(error = %e, "etcd JSON gateway: status for /version failed");
            crate::cluster::VERSION.to_string()
        }
    };
    let cluster = {
        let mut parts = server.split('.');
        match (parts.next(), parts.next()) {
            (Some(major), Some(minor)) => format!("{major}.{minor}.0"),
            _ => server.clone(),
        }
    };
    let mut json = String::from("{\"etcdserver\":");
    crate::gojson::write_string(&mut json, &server);
    json.push_str(",\"etcdcluster\":");
    crate::gojson::write_string(&mut json, &cluster);
    json.push('}');
    let mut r = Response::new(Body::new(Full::new(Bytes::from(json))));
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceConfig;

    async fn post(svc: &EtcdService, path: &str, body: &str) -> (StatusCode, String) {
        post_as(svc, ClientRole::Admin, path, body).await
    }

    async fn post_as(svc: &EtcdService, role: ClientRole, path: &str, body: &str) -> (StatusCode, String) {
        let req = http::Request::builder()
            .method(Method::POST)
            .uri(path)
            .body(Body::new(Full::new(Bytes::from(body.to_string()))))
            .expect("request");
        let resp = handle(svc.clone(), Ok(role), req).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Every path reaches its service with the right message names: none answers the
    /// gateway's own internal error.
    #[tokio::test]
    async fn every_path_reaches_its_service() {
        let svc = EtcdService::new(crate::MemoryBackend::new(), ServiceConfig::default());
        for path in [
            "kv/range",
            "kv/put",
            "kv/deleterange",
            "kv/txn",
            "kv/compaction",
            "lease/grant",
            "lease/revoke",
            "kv/lease/revoke",
            "lease/timetolive",
            "kv/lease/timetolive",
            "lease/leases",
            "kv/lease/leases",
            "lease/keepalive",
            "cluster/member/add",
            "cluster/member/remove",
            "cluster/member/update",
            "cluster/member/list",
            "cluster/member/promote",
            "maintenance/alarm",
            "maintenance/status",
            "maintenance/defragment",
            "maintenance/hash",
            "maintenance/snapshot",
            "maintenance/transfer-leadership",
            "auth/enable",
            "lock/lock",
            "election/leader",
        ] {
            let (status, body) = post(&svc, &format!("/v3/{path}"), r#"{"key":"YQ=="}"#).await;
            assert!(!body.contains("etcd JSON gateway"), "{path}: {status} {body}");
            assert!(
                status != StatusCode::NOT_FOUND || body.contains("\"code\":5"),
                "{path}: {status} {body}"
            );
        }
    }

    /// Every RPC the gateway names is a method of etcd's services, and every method of those
    /// services is one the gateway names: the role check sees the names gRPC uses.
    #[test]
    fn rpc_names_are_the_services_methods() {
        let methods = crate::jsonpb::rpc_methods();
        assert!(methods.len() >= 20, "{methods:?}");
        let named: Vec<&str> = ALL_PATHS.iter().filter_map(|p| Rpc::from_path(p)).map(Rpc::name).collect();
        for m in &methods {
            assert!(named.contains(&m.as_str()) || m == "HashKV", "{m} has no gateway path");
        }
        for n in named.iter().filter(|n| !["Auth", "Lock", "Election"].contains(n)) {
            assert!(methods.iter().any(|m| m == n), "{n} is not a method of etcd's services");
        }
        for r in shoal_api::roles::ETCD_READS.iter().chain(shoal_api::roles::ETCD_READS_BY_BODY) {
            assert!(methods.iter().any(|m| m == r), "roles names {r}, which etcd does not have");
        }
    }

    const ALL_PATHS: &[&str] = &[
        "kv/range",
        "kv/put",
        "kv/deleterange",
        "kv/txn",
        "kv/compaction",
        "watch",
        "lease/grant",
        "lease/revoke",
        "lease/keepalive",
        "lease/timetolive",
        "lease/leases",
        "cluster/member/add",
        "cluster/member/remove",
        "cluster/member/update",
        "cluster/member/list",
        "cluster/member/promote",
        "maintenance/alarm",
        "maintenance/status",
        "maintenance/defragment",
        "maintenance/hash",
        "maintenance/snapshot",
        "maintenance/transfer-leadership",
        "auth/enable",
        "lock/lock",
        "election/leader",
    ];

    /// A read-only certificate reads through the gateway and is refused every write with 403
    /// and gRPC's PermissionDenied (7), before the service is called.
    #[tokio::test]
    async fn read_only_reads_and_writes_nothing() {
        let svc = EtcdService::new(crate::MemoryBackend::new(), ServiceConfig::default());
        let ro = ClientRole::ReadOnly;
        assert_eq!(post(&svc, "/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#).await.0, StatusCode::OK);
        let (status, body) = post_as(&svc, ro, "/v3/kv/range", r#"{"key":"YQ=="}"#).await;
        assert!(status == StatusCode::OK && body.contains(r#""value":"MQ==""#), "{status} {body}");
        let read_txn = r#"{"success":[{"request_range":{"key":"YQ=="}}]}"#;
        let (status, body) = post_as(&svc, ro, "/v3/kv/txn", read_txn).await;
        assert!(status == StatusCode::OK && body.contains(r#""value":"MQ==""#), "{status} {body}");
        let (status, _) = post_as(&svc, ro, "/v3/maintenance/alarm", r#"{"action":"GET"}"#).await;
        assert_eq!(status, StatusCode::OK);
        for (path, body) in [
            ("kv/put", r#"{"key":"YQ==","value":"Mg=="}"#),
            ("kv/deleterange", r#"{"key":"YQ=="}"#),
            ("kv/txn", r#"{"success":[{"request_put":{"key":"YQ==","value":"Mg=="}}]}"#),
            (
                "kv/txn",
                r#"{"failure":[{"request_txn":{"success":[{"request_delete_range":{"key":"YQ=="}}]}}]}"#,
            ),
            ("kv/compaction", r#"{"revision":"1"}"#),
            ("lease/grant", r#"{"TTL":"10"}"#),
            ("lease/revoke", r#"{"ID":"1"}"#),
            ("lease/keepalive", r#"{"ID":"1"}"#),
            ("maintenance/alarm", r#"{"action":"ACTIVATE"}"#),
            ("maintenance/defragment", "{}"),
            ("maintenance/snapshot", "{}"),
        ] {
            let (status, answer) = post_as(&svc, ro, &format!("/v3/{path}"), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {body}: {answer}");
            assert!(answer.contains("read-only certificate") && answer.ends_with(r#""code":7}"#), "{answer}");
        }
        // Nothing changed.
        let (_, body) = post(&svc, "/v3/kv/range", r#"{"key":"YQ=="}"#).await;
        assert!(body.contains(r#""value":"MQ==""#) && body.contains(r#""version":"1""#), "{body}");
    }

    #[test]
    fn stream_errors_are_grpc_gateways() {
        let s = Status::unavailable("etcdserver: no leader");
        assert_eq!(
            error_chunk(&s),
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
        );
    }
}
