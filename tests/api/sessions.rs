//! "My devices" in pages, and the cap on sessions per user. Run on both stores.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn sessions(app: &TestApp, token: &str, query: &str) -> Reply {
    app.raw("GET", &format!("/api/sessions{query}"), None, String::new(), Some(token)).await
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect()
}

fn sid(pair: &Value) -> String {
    jwt_claims(&access_token(pair))["sid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_login_beyond_the_session_cap_ends_the_least_recently_used_session() {
    let app = TestApp::spawn(&[("JwtRefreshToken__Sessions__MaxPerUser", "3")]);
    app.add_user("alice", PASSWORD, &[]);
    app.add_user("bob", PASSWORD, &[]);
    let bobs = app.login("bob", PASSWORD).await;
    let mut pairs = Vec::new();
    for _ in 0..3 {
        pairs.push(app.login("alice", PASSWORD).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The oldest is used again: the second becomes the least recently used.
    let first = app.refresh_ok(&refresh_token(&pairs[0])).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let fourth = app.login("alice", PASSWORD).await;
    assert_invalid_grant(&app.refresh(&refresh_token(&pairs[1])).await, "the least recently used session ended");
    let page = sessions(&app, &access_token(&fourth), "").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let mut listed = ids(&page.json());
    listed.sort();
    let mut expected = vec![sid(&first), sid(&pairs[2]), sid(&fourth)];
    expected.sort();
    assert_eq!(listed, expected, "three sessions: the cap");
    app.refresh_ok(&refresh_token(&first)).await;
    app.refresh_ok(&refresh_token(&bobs)).await;
}

#[tokio::test]
async fn my_sessions_come_in_pages_newest_first_with_an_opaque_cursor() {
    let app = TestApp::spawn(&[]);
    app.add_user("alice", PASSWORD, &[]);
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(sid(&app.login("alice", PASSWORD).await));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let me = app.login("alice", PASSWORD).await;
    made.push(sid(&me));
    let token = access_token(&me);
    let all = sessions(&app, &token, "").await.json();
    assert!(all["next_cursor"].is_null(), "one page holds them all by default: {all}");
    let everything = ids(&all);
    let mut newest_first = made.clone();
    newest_first.reverse();
    assert_eq!(everything, newest_first);
    assert_eq!(all["sessions"][0]["current"], true);
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_string();
    for round in 0.. {
        assert!(round < 5, "the pages end");
        let r = sessions(&app, &token, &query).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        assert!(ids(&page).len() <= 2, "{page}");
        paged.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                break;
            }
        }
    }
    assert_eq!(paged, everything, "the pages hold each session once, in order");
    for (query, why) in [
        ("?limit=0", "limit 0"),
        ("?limit=101", "above the largest page"),
        ("?limit=two", "not a number"),
        ("?cursor=not*base64", "a cursor we never issued"),
        ("?cursor=bm9wZQ", "base64 of garbage"),
        ("?limit=1&limit=2", "a repeated limit"),
    ] {
        assert_invalid_request(&sessions(&app, &token, query).await, why);
    }
}
