//! The bad-input sweep: every RPC of every service the agent serves — discovered from the
//! descriptor sets (strata.v1 and grpc.health.v1, server reflection), so a new RPC is covered
//! without editing this test — gets requests with boundary values in every field, one
//! field at a time over a plausible baseline request: empty, huge, negative, 2^31-1,
//! 2^63-1, non-UTF-8, multi-MiB strings and bytes, long and huge repeated fields and maps.
//! Each answer must be a specific status (never UNKNOWN or INTERNAL) within a deadline,
//! the agent must stay up, and after a restart every topic it had must still be served
//! (real etcd + s3s-fs).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures::StreamExt;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    MethodDescriptor, ReflectMessage, Value,
};
use strata_client::proto;
use strata_client::proto::admin_client::AdminClient;
use strata_client::proto::log_client::LogClient;
use strata_tests::compactor::create_topic;
use strata_tests::{AgentKind, AgentProcess, cli_ok, report};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

/// Replaced, byte for byte, by invalid UTF-8 once a request is encoded.
const NOT_UTF8: &str = "\u{1}not-utf-8-placeholder\u{1}";
/// Longest an answer may take: a fetch long-polls at most 30 s.
const DEADLINE: Duration = Duration::from_secs(40);
/// Requests in flight at once.
const CONCURRENCY: usize = 4;

/// Passes request and response bytes through as they are.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Every service the agent serves.
fn pool() -> DescriptorPool {
    let mut pool = DescriptorPool::new();
    for set in [
        proto::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    ] {
        pool.decode_file_descriptor_set(set)
            .expect("valid descriptor set");
    }
    pool
}

/// A plausible value for a field, by its name: the sweep's topic, group, partition 0.
fn baseline_scalar(method: &MethodDescriptor, field: &FieldDescriptor) -> Value {
    let doomed = method.name().starts_with("Delete");
    match field.kind() {
        Kind::String => Value::String(
            match (field.name(), doomed) {
                ("name" | "topic" | "group_id", true) => "sweep-doomed",
                ("name" | "topic", false) => "sweep",
                ("group_id", false) => "sweep-group",
                ("key", _) => "h",
                _ => "",
            }
            .to_string(),
        ),
        Kind::Bytes => Value::Bytes(Bytes::from_static(b"v")),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(match field.name() {
            "partitions" | "max_bytes" => 1,
            _ => 0,
        }),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(0),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(0),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(0),
        Kind::Bool => Value::Bool(false),
        Kind::Float => Value::F32(0.0),
        Kind::Double => Value::F64(0.0),
        Kind::Enum(e) => Value::EnumNumber(e.default_value().number()),
        Kind::Message(m) => Value::Message(baseline(method, &m, 0)),
    }
}

/// A plausible message: every field set to its baseline (one element for lists).
fn baseline(
    method: &MethodDescriptor,
    message: &MessageDescriptor,
    depth: usize,
) -> DynamicMessage {
    let mut out = DynamicMessage::new(message.clone());
    if depth > 3 {
        return out;
    }
    for field in message.fields() {
        if field.containing_oneof().is_some() {
            continue;
        }
        if field.is_map() {
            continue;
        }
        let value = if let Kind::Message(m) = field.kind() {
            Value::Message(baseline(method, &m, depth + 1))
        } else {
            baseline_scalar(method, &field)
        };
        let value = if field.is_list() {
            Value::List(vec![value])
        } else {
            value
        };
        out.set_field(&field, value);
    }
    // A oneof: its first member.
    for oneof in message.oneofs() {
        if let Some(field) = oneof.fields().next() {
            let value = baseline_scalar(method, &field);
            out.set_field(&field, value);
        }
    }
    out
}

/// The boundary values of one scalar field, labelled.
fn boundary_scalars(field: &FieldDescriptor) -> Vec<(&'static str, Value)> {
    let huge = 3 << 20;
    match field.kind() {
        Kind::String => vec![
            ("empty", Value::String(String::new())),
            ("249 chars", Value::String("x".repeat(249))),
            ("250 chars", Value::String("x".repeat(250))),
            ("slash and unicode", Value::String("a/b ü\u{0}".into())),
            ("3 MiB", Value::String("s".repeat(huge))),
            ("not UTF-8", Value::String(NOT_UTF8.into())),
        ],
        Kind::Bytes => vec![
            ("empty", Value::Bytes(Bytes::new())),
            ("3 MiB", Value::Bytes(Bytes::from(vec![0xAB; huge]))),
        ],
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => vec![
            ("0", Value::I32(0)),
            ("-1", Value::I32(-1)),
            ("i32::MIN", Value::I32(i32::MIN)),
            ("2^31-1", Value::I32(i32::MAX)),
        ],
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => vec![
            ("0", Value::I64(0)),
            ("-1", Value::I64(-1)),
            ("i64::MIN", Value::I64(i64::MIN)),
            ("2^31-1", Value::I64(i32::MAX as i64)),
            ("2^63-1", Value::I64(i64::MAX)),
        ],
        Kind::Uint32 | Kind::Fixed32 => vec![("0", Value::U32(0)), ("max", Value::U32(u32::MAX))],
        Kind::Uint64 | Kind::Fixed64 => vec![("0", Value::U64(0)), ("max", Value::U64(u64::MAX))],
        Kind::Bool => vec![("true", Value::Bool(true)), ("false", Value::Bool(false))],
        Kind::Float => vec![
            ("NaN", Value::F32(f32::NAN)),
            ("inf", Value::F32(f32::INFINITY)),
        ],
        Kind::Double => vec![
            ("NaN", Value::F64(f64::NAN)),
            ("inf", Value::F64(f64::INFINITY)),
        ],
        Kind::Enum(_) => vec![
            ("0", Value::EnumNumber(0)),
            ("1", Value::EnumNumber(1)),
            ("unknown", Value::EnumNumber(999)),
            ("negative", Value::EnumNumber(-5)),
        ],
        Kind::Message(_) => Vec::new(),
    }
}

/// Every request of the sweep for `method`: the baseline, then one field changed at a
/// time (nested fields too), labelled by its path.
fn requests(method: &MethodDescriptor) -> Vec<(String, DynamicMessage)> {
    let input = method.input();
    let base = baseline(method, &input, 0);
    let mut out = vec![("baseline".to_string(), base.clone())];
    mutate(method, &base, &mut Vec::new(), &mut out, &base, 0);
    out
}

/// Adds, for each field of `message` (reached from `root` by `path`), the root with that
/// field set to each boundary value.
fn mutate(
    method: &MethodDescriptor,
    message: &DynamicMessage,
    path: &mut Vec<FieldDescriptor>,
    out: &mut Vec<(String, DynamicMessage)>,
    root: &DynamicMessage,
    depth: usize,
) {
    if depth > 2 {
        return;
    }
    for field in message.descriptor().fields() {
        let label = |what: &str| {
            let mut names: Vec<&str> = path.iter().map(FieldDescriptor::name).collect();
            names.push(field.name());
            format!("{} = {what}", names.join("."))
        };
        let mut values: Vec<(String, Value)> = Vec::new();
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let key_field = entry.map_entry_key_field();
            let value_field = entry.map_entry_value_field();
            values.push((label("empty map"), Value::Map(Default::default())));
            for (what, key) in boundary_scalars(&key_field) {
                if let Some(key) = map_key(&key) {
                    let value = baseline_scalar(method, &value_field);
                    values.push((
                        label(&format!("map key {what}")),
                        Value::Map([(key, value)].into_iter().collect()),
                    ));
                }
            }
            let many = (0..100_000)
                .map(|i| {
                    (
                        MapKey::String(format!("key-{i}")),
                        baseline_scalar(method, &value_field),
                    )
                })
                .collect();
            values.push((label("100,000 entries"), Value::Map(many)));
        } else if let Kind::Message(nested) = field.kind() {
            let element = baseline(method, &nested, 0);
            if field.is_list() {
                values.push((label("empty list"), Value::List(Vec::new())));
                values.push((
                    label("100,001 elements"),
                    Value::List(vec![Value::Message(element.clone()); 100_001]),
                ));
            } else {
                values.push((
                    label("empty message"),
                    Value::Message(DynamicMessage::new(nested.clone())),
                ));
            }
            // The nested message's own fields, inside the baseline.
            path.push(field.clone());
            mutate(method, &element, path, out, root, depth + 1);
            path.pop();
        } else {
            for (what, value) in boundary_scalars(&field) {
                let value = if field.is_list() {
                    Value::List(vec![value])
                } else {
                    value
                };
                values.push((label(what), value));
            }
            if field.is_list() {
                values.push((label("empty list"), Value::List(Vec::new())));
                values.push((
                    label("200,000 elements"),
                    Value::List(vec![baseline_scalar(method, &field); 200_000]),
                ));
            }
        }
        for (label, value) in values {
            let mut request = root.clone();
            set_path(&mut request, path, &field, value);
            out.push((label, request));
        }
    }
}

fn map_key(value: &Value) -> Option<MapKey> {
    match value {
        Value::String(s) => Some(MapKey::String(s.clone())),
        Value::I32(n) => Some(MapKey::I32(*n)),
        Value::I64(n) => Some(MapKey::I64(*n)),
        Value::U32(n) => Some(MapKey::U32(*n)),
        Value::U64(n) => Some(MapKey::U64(*n)),
        Value::Bool(b) => Some(MapKey::Bool(*b)),
        _ => None,
    }
}

/// Sets `field` of the message `path` leads to (through the first element of lists).
fn set_path(
    message: &mut DynamicMessage,
    path: &[FieldDescriptor],
    field: &FieldDescriptor,
    value: Value,
) {
    let Some((first, rest)) = path.split_first() else {
        message.set_field(field, value);
        return;
    };
    let mut nested = message.get_field(first).into_owned();
    match &mut nested {
        Value::Message(m) => set_path(m, rest, field, value),
        Value::List(items) => {
            if let Some(Value::Message(m)) = items.first_mut() {
                set_path(m, rest, field, value);
            }
        }
        _ => {}
    }
    message.set_field(first, nested);
}

/// Encodes a request, making every placeholder string invalid UTF-8 of the same length.
fn encode(request: &DynamicMessage) -> Bytes {
    let mut bytes = request.encode_to_vec();
    let needle = NOT_UTF8.as_bytes();
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let start = at + found;
        bytes[start..start + needle.len()].fill(0xFF);
        at = start + needle.len();
    }
    Bytes::from(bytes)
}

/// What the agent answered: a status code, or `None` for no answer within the deadline.
async fn call(
    channel: tonic::transport::Channel,
    method: &MethodDescriptor,
    body: Bytes,
) -> Option<Code> {
    let path: http::uri::PathAndQuery =
        format!("/{}/{}", method.parent_service().full_name(), method.name())
            .parse()
            .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let output = method.output();
    let answer = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let first: Option<Bytes> =
            match (method.is_client_streaming(), method.is_server_streaming()) {
                (false, false) => Some(
                    grpc.unary(tonic::Request::new(body), path, RawCodec)
                        .await?
                        .into_inner(),
                ),
                (false, true) => {
                    grpc.server_streaming(tonic::Request::new(body), path, RawCodec)
                        .await?
                        .into_inner()
                        .message()
                        .await?
                }
                (true, _) => {
                    let requests = futures::stream::iter([body]).chain(futures::stream::pending());
                    grpc.streaming(tonic::Request::new(requests), path, RawCodec)
                        .await?
                        .into_inner()
                        .message()
                        .await?
                }
            };
        // A produce session reports each request's status inside its response.
        if let Some(bytes) = first
            && let Ok(response) = DynamicMessage::decode(output.clone(), bytes)
            && let Some(Value::I32(code)) = response
                .get_field_by_name("error_code")
                .map(|v| v.into_owned())
            && code != 0
        {
            return Err(Status::new(Code::from_i32(code), "in-band error"));
        }
        Ok::<(), Status>(())
    };
    match tokio::time::timeout(DEADLINE, answer).await {
        Ok(Ok(())) => Some(Code::Ok),
        Ok(Err(status)) => Some(status.code()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_answers_bad_input_with_a_specific_status() {
    let mut agent = AgentProcess::start(AgentKind::new_cluster("sweep"), &[]);
    let server = agent.server();
    create_topic(&server, "sweep", 2, &[]).await;
    create_topic(&server, "sweep-doomed", 1, &[]).await;
    cli_ok(
        &server,
        &["produce", "sweep", "--partition", "0"],
        b"one\ntwo\n",
    );

    let pool = pool();
    let channel = tonic::transport::Endpoint::from_shared(server.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad: Vec<String> = Vec::new();
    let mut rpcs = 0;
    let mut sent = 0;
    for service in pool.services() {
        for method in service.methods() {
            rpcs += 1;
            let all = requests(&method);
            sent += all.len();
            let answers: Vec<(String, Option<Code>)> = futures::stream::iter(all)
                .map(|(label, request)| {
                    let (channel, method) = (channel.clone(), method.clone());
                    async move {
                        let body = encode(&request);
                        (label, call(channel, &method, body).await)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for (label, answer) in answers {
                let name = answer.map_or("no answer".to_string(), |c| format!("{c:?}"));
                *counts.entry(name.clone()).or_default() += 1;
                if matches!(answer, None | Some(Code::Unknown | Code::Internal)) {
                    bad.push(format!(
                        "{}/{}: {label}: {name}",
                        service.name(),
                        method.name()
                    ));
                }
            }
            assert!(
                agent.is_running(),
                "the agent died at {}:\n{}",
                method.full_name(),
                agent.log_text()
            );
        }
    }
    report(&format!(
        "SWEEP: {sent} requests over {rpcs} RPCs of {} services; answers: {counts:?}",
        pool.services().count()
    ));
    assert!(
        bad.is_empty(),
        "{} bad answers:\n{}",
        bad.len(),
        bad.join("\n")
    );

    // Every topic is still served after a restart.
    let channel = strata_client::connect(&server).await.unwrap();
    let topics: Vec<proto::TopicInfo> = AdminClient::new(channel.transport())
        .list_topics(proto::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert!(topics.iter().any(|t| t.name == "sweep"));
    agent.restart();
    let channel = strata_client::connect(&server).await.unwrap();
    let mut log = LogClient::new(channel.transport()).max_decoding_message_size(64 << 20);
    for topic in &topics {
        for partition in 0..topic.partitions {
            log.fetch(proto::FetchRequest {
                isolation_level: 0,
                topic_id: String::new(),
                topic: topic.name.clone(),
                partition,
                offset: 0,
                max_bytes: 0,
                max_wait_ms: 0,
                zone: String::new(),
            })
            .await
            .unwrap_or_else(|e| {
                panic!("{}/{partition} not served after a restart: {e}", topic.name)
            });
        }
    }
}
