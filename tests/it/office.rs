//! The office's intake server as a real process (`gongkai office serve`) on
//! loopback, spoken to over HTTP with reqwest: tokens, idempotent feedback,
//! and malformed, oversized and unauthorised requests that store nothing.

use crate::common;

use common::OfficeServer;
use serde_json::json;

fn item(id: &str) -> serde_json::Value {
    json!({"id": id, "receipt": "K7Q2MD", "created_at": "2026-10-08T10:00:00+08:00",
           "notice_id": "2026q3-finance", "notice_version": 1,
           "kind": "rating", "rating": 3, "reasons": ["clear"], "text": "", "contact": ""})
}

fn client() -> reqwest::Client {
    gongkai::mqtt::install_crypto_provider();
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_is_stored_once_and_bad_requests_store_nothing() {
    let office = OfficeServer::running();
    let token = office.token("lobby-3");
    let http = client();
    let post = |body: serde_json::Value, token: &str| {
        http.post(format!("{}/api/v1/feedback", office.url))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let a = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a10";
    let b = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a11";
    let batch =
        json!({"screen": "lobby-3", "community": "lixia-demo", "items": [item(a), item(b)]});

    // Accepted, then accepted again on a retry, and stored once.
    for _ in 0..2 {
        let response = post(batch.clone(), &token).await.unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["accepted"], json!([a, b]));
        assert_eq!(body["rejected"], json!([]));
    }
    assert_eq!(office.stored(), 2);

    // An invalid item is rejected with its reason; the rest are taken.
    let mut bad = item("0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a12");
    bad["rating"] = json!(7);
    let c = "0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a13";
    let response = post(
        json!({"screen": "lobby-3", "community": "lixia-demo", "items": [bad, item(c)]}),
        &token,
    )
    .await
    .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["accepted"], json!([c]));
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("1, 2 or 3")
    );
    assert_eq!(office.stored(), 3);

    // Malformed: 400 with a JSON error naming the field.
    let response = post(json!({"screen": "lobby-3", "items": "many"}), &token)
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("malformed"),
        "{body}"
    );

    // Oversized: 413.
    let mut huge = item("0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a14");
    huge["text"] = json!("长".repeat(600_000));
    let response = post(
        json!({"screen": "lobby-3", "community": "lixia-demo", "items": [huge]}),
        &token,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "a JSON error: {body}");

    // Unauthorised: no token, a wrong token, another screen's token.
    let response = http
        .post(format!("{}/api/v1/feedback", office.url))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        post(batch.clone(), "not-a-token").await.unwrap().status(),
        401
    );
    let other = office.token("lobby-4");
    let mut fresh = batch.clone();
    fresh["items"] = json!([item("0192f1e4-7b7a-7cc3-9a51-6b3f4f0b2a15")]);
    assert_eq!(post(fresh.clone(), &other).await.unwrap().status(), 401);
    // A new token replaces the old one.
    let renewed = office.token("lobby-3");
    assert_eq!(post(fresh.clone(), &token).await.unwrap().status(), 401);
    assert_eq!(post(fresh, &renewed).await.unwrap().status(), 200);
    assert_eq!(
        office.stored(),
        4,
        "nothing of the refused requests was stored"
    );
}
