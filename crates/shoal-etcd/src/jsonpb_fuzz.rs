//! Fuzz target: the etcd v3 JSON gateway's request bodies (`/v3/kv/range`, `/v3/kv/put`,
//! `/v3/kv/deleterange`, `/v3/kv/txn`, `/v3/kv/compaction`, `/v3/lease/*`, `/v3/watch`) as the
//! gateway reads them: Go's JSON scanner ([`gojson::ValueReader`]), then jsonpb over the
//! descriptors ([`from_json`]). Arbitrary bytes and structure-aware mutations of valid bodies
//! (base64 keys, int64 as strings, camelCase names, unknown fields, nesting) never panic and are
//! refused as `InvalidArgument` with Go's message, never as an internal error; every message the
//! gateway writes reads back as itself; a stream split anywhere yields the same values.

use super::*;
use crate::gojson::{Next, ValueReader};
use crate::pb::etcdserverpb as pb;
use proptest::prelude::*;

/// Every request message the gateway decodes from a body.
const REQUESTS: &[&str] = &[
    "etcdserverpb.RangeRequest",
    "etcdserverpb.PutRequest",
    "etcdserverpb.DeleteRangeRequest",
    "etcdserverpb.TxnRequest",
    "etcdserverpb.CompactionRequest",
    "etcdserverpb.WatchRequest",
    "etcdserverpb.LeaseGrantRequest",
    "etcdserverpb.LeaseRevokeRequest",
    "etcdserverpb.LeaseKeepAliveRequest",
    "etcdserverpb.LeaseTimeToLiveRequest",
    "etcdserverpb.LeaseLeasesRequest",
    "etcdserverpb.MemberAddRequest",
    "etcdserverpb.AlarmRequest",
    "etcdserverpb.StatusRequest",
    "etcdserverpb.HashRequest",
    "etcdserverpb.MoveLeaderRequest",
];

/// Valid bodies, as etcd's documentation and etcdctl's users write them.
const SAMPLES: &[(&str, &str)] = &[
    (
        "etcdserverpb.RangeRequest",
        r#"{"key":"Zm9v","range_end":"Zm9w","limit":"10","revision":"0","sort_order":"DESCEND","sort_target":"MOD","keys_only":true,"minModRevision":"2"}"#,
    ),
    (
        "etcdserverpb.PutRequest",
        r#"{"key":"Zm9v","value":"YmFy","lease":"7587862916410826000","prev_kv":true}"#,
    ),
    ("etcdserverpb.DeleteRangeRequest", r#"{"key":"AA==","range_end":"AA==","prev_kv":false}"#),
    (
        "etcdserverpb.TxnRequest",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmFy"},{"key":"YQ==","range_end":"Yg==","target":"MOD","mod_revision":"3","result":"LESS"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}},{"request_range":{"key":"Zm9v"}},{"request_txn":{"success":[{"request_delete_range":{"key":"eA=="}}]}}],"failure":[{"request_range":{"key":"Zm9v","count_only":true}}]}"#,
    ),
    ("etcdserverpb.CompactionRequest", r#"{"revision":"3","physical":true}"#),
    (
        "etcdserverpb.WatchRequest",
        r#"{"create_request":{"key":"Zm9v","range_end":"AA==","start_revision":"1","filters":["NOPUT",1],"prev_kv":true,"watch_id":"-1"}}"#,
    ),
    ("etcdserverpb.WatchRequest", r#"{"cancel_request":{"watch_id":"3"}}"#),
    ("etcdserverpb.LeaseGrantRequest", r#"{"TTL":"30","ID":0}"#),
    ("etcdserverpb.LeaseRevokeRequest", r#"{"ID":"7587862916410826000"}"#),
    ("etcdserverpb.LeaseTimeToLiveRequest", r#"{"ID":"7587862916410826000","keys":true}"#),
];

/// Decodes `body` as the gateway does: its first JSON value (none: the empty request), then
/// jsonpb. Panics (failing the case) on an internal error: no body may cause one.
fn gateway(name: &str, body: &[u8]) -> Result<(), String> {
    let mut r = ValueReader::default();
    r.push(body);
    let raw = match r.next(true) {
        Next::Value(v) => Some(v),
        Next::Eof | Next::NeedMore => None,
        Next::Error(e) => {
            assert!(!e.is_empty(), "an empty syntax error for {body:?}");
            return Err(e);
        }
    };
    decode(name, raw.as_deref())
}

/// [`from_json`] into the message's own prost type.
fn decode(name: &str, raw: Option<&[u8]>) -> Result<(), String> {
    fn typed<T: prost::Message + Default>(name: &str, raw: Option<&[u8]>) -> Result<(), JsonError> {
        from_json::<T>(name, raw).map(drop)
    }
    let r = match name.trim_start_matches("etcdserverpb.") {
        "RangeRequest" => typed::<pb::RangeRequest>(name, raw),
        "PutRequest" => typed::<pb::PutRequest>(name, raw),
        "DeleteRangeRequest" => typed::<pb::DeleteRangeRequest>(name, raw),
        "TxnRequest" => typed::<pb::TxnRequest>(name, raw),
        "CompactionRequest" => typed::<pb::CompactionRequest>(name, raw),
        "WatchRequest" => typed::<pb::WatchRequest>(name, raw),
        "LeaseGrantRequest" => typed::<pb::LeaseGrantRequest>(name, raw),
        "LeaseRevokeRequest" => typed::<pb::LeaseRevokeRequest>(name, raw),
        "LeaseKeepAliveRequest" => typed::<pb::LeaseKeepAliveRequest>(name, raw),
        "LeaseTimeToLiveRequest" => typed::<pb::LeaseTimeToLiveRequest>(name, raw),
        "LeaseLeasesRequest" => typed::<pb::LeaseLeasesRequest>(name, raw),
        "MemberAddRequest" => typed::<pb::MemberAddRequest>(name, raw),
        "AlarmRequest" => typed::<pb::AlarmRequest>(name, raw),
        "StatusRequest" => typed::<pb::StatusRequest>(name, raw),
        "HashRequest" => typed::<pb::HashRequest>(name, raw),
        "MoveLeaderRequest" => typed::<pb::MoveLeaderRequest>(name, raw),
        other => panic!("no request type for {other}"),
    };
    match r {
        Ok(()) => Ok(()),
        Err(JsonError::Invalid(m)) => {
            assert!(!m.trim().is_empty(), "an empty error message");
            Err(m)
        }
        Err(e @ JsonError::Internal(_)) => panic!("{name}: an internal error for {raw:?}: {e}"),
    }
}

fn any_json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| format!("\"{n}\"")),
        Just("\"-9223372036854775809\"".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1.5".to_string()),
        Just("1e3".to_string()),
        Just("\" 12 \"".to_string()),
        Just("\"\\u0031\"".to_string()),
        prop_oneof![Just("\"NOPUT\""), Just("\"DESCEND\""), Just("\"VALUE\""), Just("\"\"")]
            .prop_map(String::from),
        "[A-Za-z0-9+/]{0,12}={0,2}".prop_map(|s| format!("\"{s}\"")),
        "\\PC{0,8}".prop_map(|s| serde_json::Value::String(s).to_string()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((field_name(), inner), 0..4).prop_map(|m| {
                let members: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// Field names of the requests (both spellings), and some that are none.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "key",
                "range_end",
                "rangeEnd",
                "limit",
                "revision",
                "sort_order",
                "sortTarget",
                "value",
                "lease",
                "prev_kv",
                "ignore_value",
                "compare",
                "success",
                "failure",
                "request_put",
                "request_range",
                "request_txn",
                "requestDeleteRange",
                "target",
                "result",
                "version",
                "mod_revision",
                "create_revision",
                "create_request",
                "cancel_request",
                "progress_request",
                "filters",
                "start_revision",
                "watch_id",
                "TTL",
                "ID",
                "keys",
                "physical",
                "peerURLs",
                "targetID",
            ][..]
        )
        .prop_map(String::from),
        "[a-z_]{1,10}",
    ]
}

/// Replaces (or adds) the value of the `n`th `"name":` member found in `body`, or inserts an
/// unknown member after the `n`th `{`: a textual, structure-aware mutation that keeps most of
/// the body valid.
fn mutate(body: &str, n: usize, name: &str, value: &str) -> String {
    let members: Vec<usize> = body.match_indices("\":").map(|(i, _)| i + 2).collect();
    let opens: Vec<usize> = body.match_indices('{').map(|(i, _)| i + 1).collect();
    if n.is_multiple_of(2) && !members.is_empty() {
        let at = members[n / 2 % members.len()];
        // The old value ends at the first `,` or `}` outside strings and brackets.
        let (mut depth, mut in_str, mut esc, mut end) = (0i32, false, false, body.len());
        for (i, c) in body[at..].char_indices() {
            match c {
                _ if esc => esc = false,
                '\\' if in_str => esc = true,
                '"' => in_str = !in_str,
                _ if in_str => {}
                '{' | '[' => depth += 1,
                '}' | ']' if depth > 0 => depth -= 1,
                ',' | '}' | ']' if depth == 0 => {
                    end = at + i;
                    break;
                }
                _ => {}
            }
        }
        format!("{}{value}{}", &body[..at], &body[end..])
    } else {
        let at = opens.get(n / 2 % opens.len().max(1)).copied().unwrap_or(0);
        format!("{}\"{name}\":{value},{}", &body[..at], &body[at..])
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..12)
}

fn range_request() -> impl Strategy<Value = pb::RangeRequest> {
    (bytes(), bytes(), any::<i64>(), any::<i64>(), -1i32..7, -1i32..7, any::<[bool; 3]>(), any::<[i64; 4]>())
        .prop_map(|(key, range_end, limit, revision, sort_order, sort_target, b, m)| pb::RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            serializable: b[0],
            keys_only: b[1],
            count_only: b[2],
            min_mod_revision: m[0],
            max_mod_revision: m[1],
            min_create_revision: m[2],
            max_create_revision: m[3],
        })
}

fn put_request() -> impl Strategy<Value = pb::PutRequest> {
    (bytes(), bytes(), any::<i64>(), any::<[bool; 3]>()).prop_map(|(key, value, lease, b)| pb::PutRequest {
        key,
        value,
        lease,
        prev_kv: b[0],
        ignore_value: b[1],
        ignore_lease: b[2],
    })
}

fn compare() -> impl Strategy<Value = pb::Compare> {
    use pb::compare::TargetUnion as U;
    let union = prop_oneof![
        Just(None),
        any::<i64>().prop_map(|v| Some(U::Version(v))),
        any::<i64>().prop_map(|v| Some(U::CreateRevision(v))),
        any::<i64>().prop_map(|v| Some(U::ModRevision(v))),
        bytes().prop_map(|v| Some(U::Value(v))),
        any::<i64>().prop_map(|v| Some(U::Lease(v))),
    ];
    (-1i32..6, -1i32..6, bytes(), bytes(), union).prop_map(
        |(result, target, key, range_end, target_union)| pb::Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        },
    )
}

fn txn_request() -> impl Strategy<Value = pb::TxnRequest> {
    use pb::request_op::Request as R;
    let leaf = prop_oneof![
        Just(None),
        range_request().prop_map(|r| Some(R::RequestRange(r))),
        put_request().prop_map(|r| Some(R::RequestPut(r))),
        (bytes(), bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| {
            Some(R::RequestDeleteRange(pb::DeleteRangeRequest { key, range_end, prev_kv }))
        }),
    ];
    let ops = |op: BoxedStrategy<Option<R>>| {
        prop::collection::vec(op.prop_map(|request| pb::RequestOp { request }), 0..3)
    };
    let flat = (prop::collection::vec(compare(), 0..3), ops(leaf.clone().boxed()), ops(leaf.clone().boxed()))
        .prop_map(|(compare, success, failure)| pb::TxnRequest { compare, success, failure });
    flat.prop_recursive(3, 12, 3, move |inner| {
        let op = prop_oneof![leaf.clone(), inner.prop_map(|t| Some(R::RequestTxn(t)))].boxed();
        (prop::collection::vec(compare(), 0..3), ops(op.clone()), ops(op))
            .prop_map(|(compare, success, failure)| pb::TxnRequest { compare, success, failure })
    })
}

/// `msg` through the gateway's writer and back through its reader.
fn round_trip<T: prost::Message + Default + PartialEq + std::fmt::Debug>(name: &str, msg: &T) {
    let json = to_json(name, msg).expect("encodes");
    gojson::check_valid(json.as_bytes()).expect("the gateway writes valid JSON");
    let back: T = from_json(name, Some(json.as_bytes())).expect("reads back");
    assert_eq!(&back, msg, "{json}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bodies_never_panic(body in prop_oneof![any_json(), "\\PC{0,40}"], name in prop::sample::select(REQUESTS)) {
        let _ = gateway(name, body.as_bytes());
        let _ = gojson::check_valid(body.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..48), name in prop::sample::select(REQUESTS)) {
        let _ = gateway(name, &body);
        let _ = gojson::check_valid(&body);
        let _ = gojson::base64_decode(&body);
        let _ = gojson::go_quote(&body);
        if let Some(s) = gojson::unquote(&body) {
            prop_assert!(s.len() <= body.len() * 3, "unquote grew {body:?}");
        }
    }

    #[test]
    fn mutated_samples_never_panic(
        sample in prop::sample::select(SAMPLES),
        edits in prop::collection::vec((any::<usize>(), field_name(), any_json()), 1..4),
    ) {
        let (name, body) = sample;
        prop_assert!(gateway(name, body.as_bytes()).is_ok(), "the sample {body}");
        let mut b = body.to_string();
        for (n, field, value) in &edits {
            b = mutate(&b, *n, field, value);
        }
        let _ = gateway(name, b.as_bytes());
    }

    #[test]
    fn what_the_gateway_writes_reads_back(r in range_request(), p in put_request(), t in txn_request()) {
        round_trip("etcdserverpb.RangeRequest", &r);
        round_trip("etcdserverpb.PutRequest", &p);
        round_trip("etcdserverpb.TxnRequest", &t);
    }

    #[test]
    fn int64s_read_as_numbers_and_as_strings(n in any::<i64>(), pad in "[ \t\n]{0,2}") {
        for body in [format!(r#"{{"limit":{n}}}"#), format!(r#"{{"limit":"{pad}{n}{pad}"}}"#)] {
            let r: pb::RangeRequest = from_json("etcdserverpb.RangeRequest", Some(body.as_bytes())).expect("an int64");
            prop_assert_eq!(r.limit, n);
        }
        let over = format!(r#"{{"limit":"{}0"}}"#, n.unsigned_abs().max(1_000_000_000_000_000_000));
        prop_assert!(matches!(from_json::<pb::RangeRequest>("etcdserverpb.RangeRequest", Some(over.as_bytes())), Err(JsonError::Invalid(_))));
    }

    #[test]
    fn base64_and_strings_round_trip(data in prop::collection::vec(any::<u8>(), 0..40), s in "\\PC{0,20}") {
        let text = shoal_kv::base64::encode(&data);
        prop_assert_eq!(gojson::base64_decode(text.as_bytes()), Ok(data));
        let mut quoted = String::new();
        gojson::write_string(&mut quoted, &s);
        prop_assert_eq!(gojson::unquote(quoted.as_bytes()), Some(s.into_bytes()));
    }

    #[test]
    fn a_stream_split_anywhere_yields_the_same_values(
        values in prop::collection::vec(any_json(), 0..4),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let body = values.join(" ");
        let whole = {
            let mut r = ValueReader::default();
            r.push(body.as_bytes());
            drain(&mut r, true)
        };
        let mut r = ValueReader::default();
        let mut got = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut from = 0;
        for c in cuts.into_iter().chain([body.len()]) {
            r.push(&body.as_bytes()[from..c]);
            from = c;
            got.extend(drain(&mut r, false));
        }
        got.extend(drain(&mut r, true));
        prop_assert_eq!(got, whole);
    }
}

/// The values a reader yields now; with `eof`, also its end (an error or EOF).
fn drain(r: &mut ValueReader, eof: bool) -> Vec<Next> {
    let mut out = Vec::new();
    loop {
        match r.next(eof) {
            Next::NeedMore => return out,
            v @ Next::Value(_) => out.push(v),
            end => {
                out.push(end);
                return out;
            }
        }
    }
}

#[test]
fn the_samples_decode() {
    for (name, body) in SAMPLES {
        gateway(name, body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
    }
}

#[test]
fn nested_txns_are_refused_as_invalid_arguments() {
    let mut refused = 0;
    for depth in 1..=80 {
        let body = format!("{}{{}}{}", r#"{"success":[{"request_txn":"#.repeat(depth), "}]}".repeat(depth));
        match gateway("etcdserverpb.TxnRequest", body.as_bytes()) {
            Ok(()) => assert_eq!(refused, 0, "depth {depth} decodes after a shallower one was refused"),
            Err(e) => {
                assert_eq!(e, "exceeded max depth", "depth {depth}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "80 nested txns decode");
}

#[test]
fn deep_and_long_bodies_are_bounded() {
    let n = 200_000;
    for name in REQUESTS {
        for body in [
            format!("{}{}", "[".repeat(n), "]".repeat(n)),
            format!("{}{}", "{\"a\":".repeat(n), "}".repeat(n)),
            format!("{{\"key\":\"{}\"}}", "QUFB".repeat(n)),
            format!("{{\"compare\":[{}{{}}]}}", "{},".repeat(n)),
        ] {
            let _ = gateway(name, body.as_bytes());
        }
    }
}
