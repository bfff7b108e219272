//! Strategies for every message, and one fixed sample of each message type.

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use protocol::*;
use uuid::Uuid;

pub(crate) fn name<T: std::str::FromStr + std::fmt::Debug>() -> impl Strategy<Value = T>
where
    T::Err: std::fmt::Debug,
{
    "[a-z0-9][a-z0-9._-]{0,24}".prop_map(|s| s.parse().unwrap())
}

fn seq() -> impl Strategy<Value = Seq> {
    any::<u64>().prop_map(Seq)
}

fn ts() -> impl Strategy<Value = Timestamp> {
    any::<i64>().prop_map(Timestamp::from_unix_millis)
}

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn category() -> impl Strategy<Value = CategoryCode> {
    "[0-9]{4}".prop_map(|s| CategoryCode::parse(s).unwrap())
}

fn grid() -> impl Strategy<Value = GridCode> {
    prop_oneof!["[0-9]{6}", "[0-9]{9}", "[0-9]{12}", "[0-9]{14}"]
        .prop_map(|s| GridCode::parse(s).unwrap())
}

fn attr() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        any::<bool>().prop_map(AttrValue::Bool),
        any::<i64>().prop_map(AttrValue::Int),
        (-1e12f64..1e12).prop_map(AttrValue::Float),
        text().prop_map(AttrValue::Text),
    ]
}

fn attrs() -> impl Strategy<Value = BTreeMap<String, AttrValue>> {
    btree_map("[a-z_]{1,12}", attr(), 0..5)
}

fn recheck_answer() -> impl Strategy<Value = RecheckAnswer> {
    (
        text(),
        any::<u32>(),
        btree_map(text(), any::<u32>(), 0..3),
        any::<u64>(),
        seq(),
    )
        .prop_map(|(reference, matching, counts, at, seq)| RecheckAnswer {
            reference,
            matching,
            counts,
            event_id: EventId::v7(at % (1 << 47), [7; 10]),
            seq,
        })
}

fn evidence() -> impl Strategy<Value = EvidenceRef> {
    (digest(), any::<u64>(), "image/(jpeg|png)").prop_map(|(sha256, bytes, media_type)| {
        EvidenceRef {
            sha256,
            bytes,
            media_type,
        }
    })
}

fn source() -> impl Strategy<Value = Source> {
    (
        prop_oneof![
            Just(SourceKind::Camera),
            Just(SourceKind::Sensor),
            Just(SourceKind::Box)
        ],
        name(),
    )
        .prop_map(|(kind, id)| Source { kind, id })
}

fn severity() -> impl Strategy<Value = Severity> {
    prop_oneof![
        Just(Severity::Low),
        Just(Severity::Medium),
        Just(Severity::High),
        Just(Severity::Critical)
    ]
}

fn location() -> impl Strategy<Value = Location> {
    (
        -90.0f64..=90.0,
        -180.0f64..=180.0,
        prop_oneof![Just(Crs::Wgs84), Just(Crs::Gcj02), Just(Crs::Bd09)],
    )
        .prop_map(|(lat, lon, crs)| Location { lat, lon, crs })
}

pub(crate) fn event() -> impl Strategy<Value = Event> {
    (
        any::<u128>(),
        seq(),
        source(),
        category(),
        severity(),
        ts(),
        location(),
        proptest::option::of(grid()),
        attrs(),
        vec(evidence(), 0..3),
    )
        .prop_map(
            |(
                id,
                seq,
                source,
                category,
                severity,
                observed_at,
                location,
                grid,
                attributes,
                evidence,
            )| Event {
                id: EventId::from_uuid(Uuid::from_u128(id)),
                seq,
                source,
                category,
                severity,
                observed_at,
                location,
                grid,
                attributes,
                evidence,
            },
        )
}

fn component() -> impl Strategy<Value = ComponentHealth> {
    (
        source(),
        prop_oneof![
            Just(ComponentState::Ok),
            Just(ComponentState::Degraded),
            Just(ComponentState::Offline)
        ],
        proptest::option::of(ts()),
        proptest::option::of(text()),
    )
        .prop_map(|(source, state, last_seen, detail)| ComponentHealth {
            source,
            state,
            last_seen,
            detail,
        })
}

pub(crate) fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            text(),
            proptest::option::of(seq()),
            proptest::option::of(seq()),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(
                    protocol_version,
                    min_protocol_version,
                    agent_version,
                    last_acked_seq,
                    last_committed_seq,
                    store_epoch,
                )| {
                    Message::Hello(Hello {
                        protocol_version,
                        min_protocol_version,
                        agent_version,
                        last_acked_seq,
                        last_committed_seq,
                        store_epoch,
                    })
                }
            ),
        (any::<u16>(), text(), name(), proptest::option::of(seq())).prop_map(
            |(protocol_version, hub_version, box_id, last_committed_seq)| {
                Message::Welcome(Welcome {
                    protocol_version,
                    hub_version,
                    box_id,
                    last_committed_seq,
                })
            }
        ),
        vec(event(), 0..4).prop_map(|events| Message::EventBatch(EventBatch { events })),
        seq().prop_map(|up_to| Message::Ack(Ack { up_to })),
        (
            digest(),
            any::<u64>(),
            any::<u64>(),
            vec(any::<u8>(), 0..256)
        )
            .prop_map(
                |(sha256, offset, total_bytes, data)| Message::EvidenceChunk(EvidenceChunk {
                    sha256,
                    offset,
                    total_bytes,
                    data
                })
            ),
        (digest(), any::<u64>(), any::<bool>()).prop_map(|(sha256, received_bytes, complete)| {
            Message::EvidenceAck(EvidenceAck {
                sha256,
                received_bytes,
                complete,
            })
        }),
        vec(digest(), 0..8).prop_map(|sha256s| Message::EvidenceQuery(EvidenceQuery { sha256s })),
        vec(digest(), 0..8).prop_map(|sha256s| Message::EvidenceLost(EvidenceLost { sha256s })),
        (
            ts(),
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(ts()),
            any::<u64>(),
            any::<u64>(),
            vec(component(), 0..4)
        )
            .prop_map(
                |(
                    at,
                    uptime_secs,
                    backlog_events,
                    oldest_unsynced_at,
                    store_bytes,
                    disk_free_bytes,
                    components,
                )| {
                    Message::Health(Health {
                        at,
                        uptime_secs,
                        backlog_events,
                        oldest_unsynced_at,
                        store_bytes,
                        disk_free_bytes,
                        components,
                    })
                }
            ),
        (any::<u128>(), name(), text(), vec(category(), 0..3)).prop_map(
            |(id, camera, reference, categories)| {
                Message::Command(Command {
                    id: CommandId::from_uuid(Uuid::from_u128(id)),
                    action: CommandAction::Recheck {
                        camera,
                        reference,
                        categories,
                    },
                })
            }
        ),
        (
            any::<u128>(),
            prop_oneof![
                Just(CommandOutcome::Done),
                Just(CommandOutcome::Unsupported),
                text().prop_map(|reason| CommandOutcome::Failed { reason })
            ],
            ts(),
            vec(evidence(), 0..2),
            attrs(),
            proptest::option::of(recheck_answer())
        )
            .prop_map(|(id, outcome, at, evidence, attributes, recheck)| {
                Message::CommandResult(CommandResult {
                    id: CommandId::from_uuid(Uuid::from_u128(id)),
                    outcome,
                    at,
                    evidence,
                    attributes,
                    recheck,
                })
            }),
        (text(), text(), text()).prop_map(
            |(token, csr_pem, agent_version)| Message::EnrollRequest(EnrollRequest {
                token,
                csr_pem,
                agent_version
            })
        ),
        (name(), text(), text(), ts()).prop_map(|(box_id, certificate_pem, ca_pem, not_after)| {
            Message::EnrollResponse(EnrollResponse::Accepted {
                box_id,
                certificate_pem,
                ca_pem,
                not_after,
            })
        }),
        (
            prop_oneof![
                Just(EnrollRefusal::UnknownToken),
                Just(EnrollRefusal::ExpiredToken),
                Just(EnrollRefusal::UsedToken),
                Just(EnrollRefusal::Revoked),
                Just(EnrollRefusal::BadCsr)
            ],
            text()
        )
            .prop_map(|(reason, message)| Message::EnrollResponse(
                EnrollResponse::Refused { reason, message }
            )),
        (
            prop_oneof![
                Just(ByeReason::Shutdown),
                Just(ByeReason::UnsupportedVersion),
                Just(ByeReason::Revoked),
                Just(ByeReason::ProtocolError)
            ],
            proptest::option::of(text())
        )
            .prop_map(|(reason, message)| Message::Bye(Bye { reason, message })),
    ]
}

/// One fixed sample of every message type: the values frozen in `fixtures/v1/`.
pub(crate) fn samples() -> Vec<(&'static str, Message)> {
    let digest = Digest([0x5a; 32]);
    let event = Event {
        id: EventId::from_uuid(Uuid::from_u128(0x0193_5f2e_1a00_7000_8000_0000_0000_0001)),
        seq: Seq(42),
        source: Source {
            kind: SourceKind::Camera,
            id: "cam-north-gate".parse().unwrap(),
        },
        category: CategoryCode::parse("0404").unwrap(),
        severity: Severity::Medium,
        observed_at: Timestamp::from_unix_millis(1_764_057_600_250),
        location: Location {
            lat: 39.9087,
            lon: 116.3975,
            crs: Crs::Gcj02,
        },
        grid: Some(GridCode::parse("11010100100101").unwrap()),
        attributes: BTreeMap::from([
            ("label".to_owned(), AttrValue::Text("car".into())),
            ("score".to_owned(), AttrValue::Float(0.87)),
            ("track_id".to_owned(), AttrValue::Int(17)),
            ("stationary".to_owned(), AttrValue::Bool(true)),
        ]),
        evidence: vec![EvidenceRef {
            sha256: digest,
            bytes: 48_213,
            media_type: "image/jpeg".into(),
        }],
    };
    let sensor_event = Event {
        id: EventId::from_uuid(Uuid::from_u128(0x0193_5f2e_1a00_7000_8000_0000_0000_0002)),
        seq: Seq(43),
        source: Source {
            kind: SourceKind::Sensor,
            id: "water-level-3".parse().unwrap(),
        },
        category: CategoryCode::parse("0505").unwrap(),
        severity: Severity::High,
        observed_at: Timestamp::from_unix_millis(1_764_057_660_000),
        location: Location {
            lat: 39.9,
            lon: 116.4,
            crs: Crs::Wgs84,
        },
        grid: None,
        attributes: BTreeMap::new(),
        evidence: vec![],
    };
    let command_id =
        CommandId::from_uuid(Uuid::from_u128(0x0193_5f2e_1a00_7000_8000_0000_0000_00c0));
    vec![
        (
            "hello",
            Message::Hello(Hello {
                protocol_version: 1,
                min_protocol_version: 1,
                agent_version: "0.1.0".into(),
                last_acked_seq: Some(Seq(41)),
                last_committed_seq: Some(Seq(43)),
                store_epoch: None,
            }),
        ),
        (
            "hello_store_epoch",
            Message::Hello(Hello {
                protocol_version: 1,
                min_protocol_version: 1,
                agent_version: "0.2.0".into(),
                last_acked_seq: None,
                last_committed_seq: None,
                store_epoch: Some(0x1c3a_5e7f_9b2d_4f60),
            }),
        ),
        (
            "welcome",
            Message::Welcome(Welcome {
                protocol_version: 1,
                hub_version: "0.1.0".into(),
                box_id: "box-0001".parse().unwrap(),
                last_committed_seq: Some(Seq(41)),
            }),
        ),
        ("event_batch", Message::EventBatch(EventBatch { events: vec![event, sensor_event] })),
        ("ack", Message::Ack(Ack { up_to: Seq(43) })),
        (
            "evidence_chunk",
            Message::EvidenceChunk(EvidenceChunk { sha256: digest, offset: 32_768, total_bytes: 48_213, data: (0..=255u8).collect() }),
        ),
        ("evidence_ack", Message::EvidenceAck(EvidenceAck { sha256: digest, received_bytes: 32_768, complete: false })),
        ("evidence_query", Message::EvidenceQuery(EvidenceQuery { sha256s: vec![digest, Digest([0x07; 32])] })),
        ("evidence_lost", Message::EvidenceLost(EvidenceLost { sha256s: vec![Digest([0x07; 32])] })),
        (
            "health",
            Message::Health(Health {
                at: Timestamp::from_unix_millis(1_764_057_700_000),
                uptime_secs: 86_400,
                backlog_events: 12,
                oldest_unsynced_at: Some(Timestamp::from_unix_millis(1_764_057_600_250)),
                store_bytes: 104_857_600,
                disk_free_bytes: 20_000_000_000,
                components: vec![
                    ComponentHealth {
                        source: Source { kind: SourceKind::Camera, id: "cam-north-gate".parse().unwrap() },
                        state: ComponentState::Ok,
                        last_seen: Some(Timestamp::from_unix_millis(1_764_057_699_900)),
                        detail: None,
                    },
                    ComponentHealth {
                        source: Source { kind: SourceKind::Sensor, id: "smoke-2".parse().unwrap() },
                        state: ComponentState::Offline,
                        last_seen: None,
                        detail: Some("no message for 3600 s".into()),
                    },
                ],
            }),
        ),
        (
            "command",
            Message::Command(Command {
                id: command_id,
                action: CommandAction::Recheck {
                    camera: "cam-north-gate".parse().unwrap(),
                    reference: "C-2026-000123".into(),
                    categories: vec![CategoryCode::parse("0404").unwrap()],
                },
            }),
        ),
        (
            "command_result",
            Message::CommandResult(CommandResult {
                id: command_id,
                outcome: CommandOutcome::Done,
                at: Timestamp::from_unix_millis(1_764_057_800_000),
                evidence: vec![EvidenceRef { sha256: digest, bytes: 48_213, media_type: "image/jpeg".into() }],
                attributes: BTreeMap::from([("car".to_owned(), AttrValue::Int(0))]),
                recheck: None,
            }),
        ),
        (
            "command_result_recheck",
            Message::CommandResult(CommandResult {
                id: command_id,
                outcome: CommandOutcome::Done,
                at: Timestamp::from_unix_millis(1_764_057_800_000),
                evidence: vec![EvidenceRef { sha256: digest, bytes: 48_213, media_type: "image/jpeg".into() }],
                attributes: BTreeMap::new(),
                recheck: Some(RecheckAnswer {
                    reference: "C-2026-000123".into(),
                    matching: 1,
                    counts: BTreeMap::from([("bicycle".to_owned(), 1), ("person".to_owned(), 2)]),
                    event_id: EventId::v7(1_764_057_800_000, [3; 10]),
                    seq: Seq(4242),
                }),
            }),
        ),
        (
            "enroll_request",
            Message::EnrollRequest(EnrollRequest {
                token: "k7Qm2-secret".into(),
                csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nMIIB...\n-----END CERTIFICATE REQUEST-----\n".into(),
                agent_version: "0.1.0".into(),
            }),
        ),
        (
            "enroll_response_accepted",
            Message::EnrollResponse(EnrollResponse::Accepted {
                box_id: "box-0001".parse().unwrap(),
                certificate_pem: "-----BEGIN CERTIFICATE-----\nMIIC...\n-----END CERTIFICATE-----\n".into(),
                ca_pem: "-----BEGIN CERTIFICATE-----\nMIID...\n-----END CERTIFICATE-----\n".into(),
                not_after: Timestamp::from_unix_millis(1_766_649_600_000),
            }),
        ),
        (
            "enroll_response_refused",
            Message::EnrollResponse(EnrollResponse::Refused { reason: EnrollRefusal::UsedToken, message: "token was used on 2026-11-20".into() }),
        ),
        ("bye", Message::Bye(Bye { reason: ByeReason::Shutdown, message: Some("hub restarting".into()) })),
    ]
}
