//! The command queue: queued centrally, delivered in ingest responses until the site confirms it
//! received it, its result recorded once and visible in the API.

mod common;

use ami_central::db::CommandStatus;
use ami_wire::{Action, CommandResult, IngestRequest, IngestResponse};
use common::*;
use serde_json::json;

fn heartbeat(received: Vec<i64>, results: Vec<CommandResult>) -> IngestRequest {
    IngestRequest { site: "s1".into(), received, results, ..IngestRequest::default() }
}

async fn send(app: &axum::Router, token: &str, req: &IngestRequest) -> IngestResponse {
    let r = ingest(app, token, req).await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

async fn a_command_is_redelivered_until_received_and_its_result_is_recorded_once(t: TestDb) {
    let app = t.app();
    let op = Some(t.operator_token.as_str());
    let r = call(
        &app,
        post_json(
            op,
            "/api/v1/sites/s1/commands",
            &json!({"meter": "m1", "action": {"type": "control", "name": "relay", "on": false}}),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["meter"], "m1");
    assert_eq!(created["action"], json!({"type": "control", "name": "relay", "on": false}));
    assert!(created["created"].as_str().unwrap().ends_with('Z'));
    let id = created["id"].as_i64().unwrap();
    // Another site never sees it.
    let other = send(&app, &t.other_site_token, &IngestRequest { site: "s2".into(), ..Default::default() }).await;
    assert!(other.commands.is_empty());

    // Delivered, and again while the site has not confirmed it (a lost response).
    for _ in 0..2 {
        let resp = send(&app, &t.site_token, &heartbeat(vec![], vec![])).await;
        assert_eq!(resp.commands.len(), 1);
        assert_eq!(resp.commands[0].id, id);
        assert_eq!(resp.commands[0].action, Action::Control { name: "relay".into(), on: false });
        let r = call(&app, get(op, &format!("/api/v1/sites/s1/commands/{id}"))).await;
        assert_eq!(r.json()["status"], "sent");
    }
    // Confirmed: no more deliveries.
    let resp = send(&app, &t.site_token, &heartbeat(vec![id], vec![])).await;
    assert!(resp.commands.is_empty());
    let resp = send(&app, &t.site_token, &heartbeat(vec![], vec![])).await;
    assert!(resp.commands.is_empty());
    assert_eq!(t.db.command("s1", id).await.unwrap().unwrap().status, CommandStatus::Sent);

    // The result, then a second (different) result for the same command, which is ignored.
    let first = CommandResult { id, ok: true, message: "relay off".into(), at: DAY0_MS };
    send(&app, &t.site_token, &heartbeat(vec![], vec![first])).await;
    let second = CommandResult { id, ok: false, message: "again".into(), at: DAY0_MS + 1 };
    send(&app, &t.site_token, &heartbeat(vec![], vec![second])).await;
    let r = call(&app, get(op, &format!("/api/v1/sites/s1/commands/{id}"))).await;
    assert_eq!(r.status, 200);
    let c = r.json();
    assert_eq!(c["status"], "done");
    assert_eq!(c["result"], json!({"ok": true, "message": "relay off", "at": "2026-11-23T00:00:00Z"}));

    // A site cannot report results for another site's commands.
    let id2 = t.db.queue_command("s1", "m1", &Action::ReadNow).await.unwrap();
    let forged = CommandResult { id: id2, ok: false, message: "forged".into(), at: 0 };
    send(&app, &t.other_site_token, &IngestRequest { site: "s2".into(), results: vec![forged], ..Default::default() })
        .await;
    assert_eq!(t.db.command("s1", id2).await.unwrap().unwrap().status, CommandStatus::Pending);

    // A failure is recorded as failed; the list is newest first; the site listing counts open commands.
    let resp = send(&app, &t.site_token, &heartbeat(vec![], vec![])).await;
    assert_eq!(resp.commands.iter().map(|c| c.id).collect::<Vec<_>>(), [id2]);
    let sites = call(&app, get(op, "/api/v1/sites")).await.json();
    assert_eq!(sites[0]["pending_commands"], 1);
    send(
        &app,
        &t.site_token,
        &heartbeat(vec![id2], vec![CommandResult { id: id2, ok: false, message: "meter silent".into(), at: 5 }]),
    )
    .await;
    let list = call(&app, get(op, "/api/v1/sites/s1/commands")).await.json();
    let ids: Vec<i64> = list.as_array().unwrap().iter().map(|c| c["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [id2, id]);
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["result"]["message"], "meter silent");
    let sites = call(&app, get(op, "/api/v1/sites")).await.json();
    assert_eq!(sites[0]["pending_commands"], 0);
}

async fn bad_command_requests_are_refused(t: TestDb) {
    let app = t.app();
    let op = Some(t.operator_token.as_str());
    let r = call(
        &app,
        post_json(op, "/api/v1/sites/nowhere/commands", &json!({"meter": "m1", "action": {"type": "read_now"}})),
    )
    .await;
    assert_eq!(r.status, 404);
    for body in [
        json!({"meter": "m1"}),
        json!({"meter": "m1", "action": {"type": "explode"}}),
        json!({"meter": "", "action": {"type": "read_now"}}),
        json!({"meter": "m1", "action": {"type": "set_clock"}, "extra": 1}),
    ] {
        let r = call(&app, post_json(op, "/api/v1/sites/s1/commands", &body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(!r.error().is_empty());
    }
    assert!(t.db.commands("s1").await.unwrap().is_empty());
    assert_eq!(call(&app, get(op, "/api/v1/sites/s1/commands/999")).await.status, 404);
    assert_eq!(call(&app, get(op, "/api/v1/sites/s1/commands/abc")).await.status, 400);
}

both_backends!(
    a_command_is_redelivered_until_received_and_its_result_is_recorded_once,
    bad_command_requests_are_refused
);
