//! JSON and text over HTTP against a service's admin port or API.

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("the server answers")
}

/// GETs `url` and returns the status of the answer.
pub async fn get_status(url: &str) -> u16 {
    get(url).await.status().as_u16()
}

/// GETs `url` and returns its body as text (a `/metrics` page, say).
pub async fn get_text(url: &str) -> String {
    get(url).await.text().await.expect("a text answer")
}

/// GETs `url` and returns its JSON answer.
pub async fn get_json(url: &str) -> serde_json::Value {
    get(url).await.json().await.expect("a JSON answer")
}

/// [`get_json`] from synchronous code (the closures [`crate::eventually`]
/// polls): runs on its own thread and runtime, so it never blocks a
/// runtime worker.
pub fn get_json_blocking(url: &str) -> serde_json::Value {
    let url = url.to_string();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(get_json(&url))
    })
    .join()
    .expect("the GET thread ends")
}

/// POSTs `body` as JSON; returns the status and the JSON answer (`null`
/// when the answer is not JSON).
pub async fn post_json(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// GETs `url` every 200 ms until its JSON answer satisfies `done`, or
/// fails the test after `secs` seconds naming `what`; returns that answer.
pub async fn poll_json(
    url: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let client = reqwest::Client::new();
    crate::within(secs, what, async {
        loop {
            if let Ok(r) = client.get(url).send().await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && done(&v)
            {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await
}
