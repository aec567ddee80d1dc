//! The one-shot demo: two nodes in this process, real HTTP requests against them, the
//! answers printed, and a check that each answer is the one expected.

use std::time::Duration;

use http::{Method, StatusCode};
use natty::{Config, LeaderState};
use tokio::net::TcpListener;

use crate::client::{Answer, Http};
use crate::node::{Error, Node};

/// How long a condition (an order handled, a takeover) may take before the demo fails.
const WAIT: Duration = Duration::from_secs(10);

struct Demo {
    http: Http,
    failures: Vec<String>,
}

impl Demo {
    /// Send one request, print it and its answer, and note a status other than `expect`.
    async fn step(
        &mut self,
        node: &Node,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        expect: StatusCode,
    ) -> Result<Answer, Error> {
        let answer = self.send(node, method.clone(), path, headers, body).await?;
        self.print(node, &method, path, headers, body, &answer, expect);
        Ok(answer)
    }

    /// Like `step`, repeating the request until it answers `expect` or `WAIT` passes.
    async fn step_until(
        &mut self,
        node: &Node,
        method: Method,
        path: &str,
        expect: StatusCode,
    ) -> Result<Answer, Error> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let answer = self.send(node, method.clone(), path, &[], "").await?;
            if answer.status == expect || tokio::time::Instant::now() >= deadline {
                self.print(node, &method, path, &[], "", &answer, expect);
                return Ok(answer);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(
        &self,
        node: &Node,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Answer, Error> {
        self.http.send(method, &node.url(path), headers, body).await
    }

    #[allow(clippy::too_many_arguments)]
    fn print(
        &mut self,
        node: &Node,
        method: &Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
        answer: &Answer,
        expect: StatusCode,
    ) {
        let mut request = format!("> {method} {path} ({})", node.name);
        for (name, value) in headers {
            request.push_str(&format!("  {name}: {value}"));
        }
        if !body.is_empty() {
            request.push_str(&format!("  {body}"));
        }
        println!("{request}");
        let mut reply = format!("< {}", answer.status);
        for name in ["location", "natty-leader", "retry-after"] {
            if let Some(value) = answer.header(name) {
                reply.push_str(&format!("  {name}: {value}"));
            }
        }
        if !answer.body.is_empty() {
            reply.push_str(&format!("  {}", answer.body));
        }
        println!("{reply}");
        if answer.status != expect {
            self.failures.push(format!(
                "{method} {path} on {}: expected {expect}, got {}",
                node.name, answer.status
            ));
        }
    }

    fn check(&mut self, ok: bool, what: &str) {
        if !ok {
            self.failures.push(what.to_owned());
        }
    }
}

async fn local_listener() -> Result<(TcpListener, String), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

pub(crate) async fn run(config: Config) -> Result<(), Error> {
    let ((listener_a, url_a), (listener_b, url_b)) =
        (local_listener().await?, local_listener().await?);
    let peers = [("node-a".to_owned(), url_a), ("node-b".to_owned(), url_b)];
    let a = Node::start("node-a", config.clone(), listener_a, &peers).await?;
    tokio::time::timeout(WAIT, a.leadership.wait_leader())
        .await
        .map_err(|_| "node-a did not become leader")??;
    let b = Node::start("node-b", config, listener_b, &peers).await?;
    let follower = LeaderState::Follower {
        leader: Some("node-a".into()),
    };
    tokio::time::timeout(WAIT, b.leadership.subscribe().wait_for(|s| *s == follower))
        .await
        .map_err(|_| "node-b did not see node-a lead")??;
    println!(
        "node-a serves {} (leader), node-b serves {} (follower)\n",
        a.url(""),
        b.url("")
    );

    let mut demo = Demo {
        http: Http::new(),
        failures: Vec::new(),
    };
    let (post, get) = (Method::POST, Method::GET);
    let orders = [
        (&a, Some("o-1"), r#"{"id":"o-1","item":"tea","quantity":2}"#),
        (
            &b,
            Some("o-2"),
            r#"{"id":"o-2","item":"scones","quantity":6}"#,
        ),
        (&a, None, r#"{"id":"o-3","item":"jam","quantity":1}"#),
    ];
    for (node, key, body) in orders {
        let headers: Vec<_> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        demo.step(
            node,
            post.clone(),
            "/orders",
            &headers,
            body,
            StatusCode::ACCEPTED,
        )
        .await?;
    }
    println!("# a client retries o-1 with the same Idempotency-Key: stored once");
    let retry = demo
        .step(
            &b,
            post.clone(),
            "/orders",
            &[("Idempotency-Key", "o-1")],
            orders[0].2,
            StatusCode::ACCEPTED,
        )
        .await?;
    demo.check(
        retry.json()["duplicate"] == true,
        "the retried o-1 was not a duplicate",
    );
    println!("# the same Idempotency-Key with another order is refused");
    demo.step(
        &b,
        post.clone(),
        "/orders",
        &[("Idempotency-Key", "o-1")],
        r#"{"id":"o-6","item":"tea","quantity":9}"#,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await?;
    println!("# ids that would change the subject, or could not be a KV key, are refused");
    for id in ["o.4", "o#4", "é"] {
        let body = format!(r#"{{"id":"{id}","item":"cake","quantity":1}}"#);
        demo.step(
            &a,
            post.clone(),
            "/orders",
            &[],
            &body,
            StatusCode::BAD_REQUEST,
        )
        .await?;
    }
    println!("# a body that is not an order: 422, in the same JSON shape");
    demo.step(
        &a,
        post.clone(),
        "/orders",
        &[],
        r#"{"id":"o-5","item":"cake"}"#,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await?;

    println!("\n# the consumer handles the orders and writes their status to KV");
    for id in ["o-1", "o-2", "o-3"] {
        let answer = demo
            .step_until(&b, get.clone(), &format!("/orders/{id}"), StatusCode::OK)
            .await?;
        demo.check(
            answer.json()["status"] == "accepted",
            "an order is not accepted",
        );
    }
    demo.step(
        &b,
        get.clone(),
        "/orders/o-9",
        &[],
        "",
        StatusCode::NOT_FOUND,
    )
    .await?;
    demo.step(
        &b,
        get.clone(),
        "/orders/o%204",
        &[],
        "",
        StatusCode::BAD_REQUEST,
    )
    .await?;

    println!("\n# /orders/{{id}}/lookup asks the order-lookup NATS service: one instance per node");
    let mut answered_by = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while answered_by.len() < 2 && tokio::time::Instant::now() < deadline {
        let answer = demo
            .step(
                &b,
                get.clone(),
                "/orders/o-2/lookup",
                &[],
                "",
                StatusCode::OK,
            )
            .await?;
        demo.check(
            answer.json()["order"]["item"] == "scones",
            "the lookup did not find o-2",
        );
        match answer.json()["answered_by"].as_str() {
            Some(node) => answered_by.insert(node.to_owned()),
            None => break,
        };
    }
    demo.check(
        answered_by.len() == 2,
        "the lookups were not shared by both instances",
    );
    println!("# the service's own errors keep their status: 404, 400");
    demo.step(
        &a,
        get.clone(),
        "/orders/o-9/lookup",
        &[],
        "",
        StatusCode::NOT_FOUND,
    )
    .await?;
    demo.step(
        &a,
        get.clone(),
        "/orders/o%204/lookup",
        &[],
        "",
        StatusCode::BAD_REQUEST,
    )
    .await?;

    println!("\n# /admin/reindex is leader-only: the follower redirects to the leader");
    let first = demo
        .step(&a, post.clone(), "/admin/reindex", &[], "", StatusCode::OK)
        .await?;
    demo.check(
        first.json()["accepted_orders"] == 3,
        "reindex did not count 3 orders",
    );
    let redirect = demo
        .step(
            &b,
            post.clone(),
            "/admin/reindex",
            &[],
            "",
            StatusCode::TEMPORARY_REDIRECT,
        )
        .await?;
    demo.check(
        redirect.header("location") == Some(a.url("/admin/reindex").as_str()),
        "the follower did not redirect to node-a",
    );
    demo.step(&b, get.clone(), "/health/ready", &[], "", StatusCode::OK)
        .await?;
    demo.step(&b, get.clone(), "/health/leader", &[], "", StatusCode::OK)
        .await?;

    println!("\n# node-a stops; node-b takes over");
    a.stop().await?;
    let taken = demo
        .step_until(&b, post.clone(), "/admin/reindex", StatusCode::OK)
        .await?;
    let (before, after) = (
        first.json()["fencing_token"].as_u64().unwrap_or(0),
        taken.json()["fencing_token"].as_u64().unwrap_or(0),
    );
    demo.check(
        after > before,
        "the new leader's fencing token did not grow",
    );
    demo.step(&b, get.clone(), "/health/leader", &[], "", StatusCode::OK)
        .await?;
    b.stop().await?;

    if !demo.failures.is_empty() {
        return Err(format!("demo failed: {}", demo.failures.join("; ")).into());
    }
    println!(
        "\ndemo ok: 3 orders accepted over HTTP (a retried Idempotency-Key stored once, a \
         reused one refused), bad ids and bodies refused as JSON, \
         handled by the natty-tower consumer and read back from KV, and through the \
         order-lookup service's two instances; /admin/reindex served by the leader only; \
         node-b took over when node-a stopped"
    );
    Ok(())
}
