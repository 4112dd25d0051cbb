//! OTLP/HTTP export (`iii-observability` `exporter: otlp`): a collector in this test (an HTTP
//! server that decodes OTLP protobuf with the `opentelemetry-proto` message types) receives the
//! engine's span of a call and an `engine::log::*` line; a collector that is down costs the
//! engine nothing but a warning.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::{barrier, eventually, EngineProc};
use iii_client::{Client, ClientOptions};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

#[derive(Default)]
struct Collected {
    spans: Vec<(String, String, String)>,
    logs: Vec<(String, String)>,
}

fn config(endpoint: &str) -> String {
    format!(
        "workers:\n  - name: iii-worker-manager\n    config: {{host: 127.0.0.1, port: 0}}\n  \
         - name: iii-observability\n    config: {{exporter: otlp, endpoint: '{endpoint}', service_name: iii-export}}\n"
    )
}

#[actix::test]
async fn spans_and_logs_reach_an_otlp_collector() {
    let got: Arc<Mutex<Collected>> = Arc::default();
    let (g1, g2) = (got.clone(), got.clone());
    let server = HttpServer::new(move || {
        let (g1, g2) = (g1.clone(), g2.clone());
        App::new()
            .route(
                "/v1/traces",
                web::post().to(move |body: web::Bytes| {
                    let g = g1.clone();
                    async move {
                        let req =
                            ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP traces");
                        for rs in req.resource_spans {
                            let service = rs.resource.unwrap().attributes[0].value.clone().unwrap();
                            let service = format!("{:?}", service.value.unwrap());
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    let trace: String =
                                        s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                                    g.lock()
                                        .unwrap()
                                        .spans
                                        .push((s.name, trace, service.clone()));
                                }
                            }
                        }
                        HttpResponse::Ok().finish()
                    }
                }),
            )
            .route(
                "/v1/logs",
                web::post().to(move |body: web::Bytes| {
                    let g = g2.clone();
                    async move {
                        let req =
                            ExportLogsServiceRequest::decode(body.as_ref()).expect("OTLP logs");
                        for rl in req.resource_logs {
                            for sl in rl.scope_logs {
                                for l in sl.log_records {
                                    let body = format!("{:?}", l.body.unwrap().value.unwrap());
                                    g.lock().unwrap().logs.push((l.severity_text, body));
                                }
                            }
                        }
                        HttpResponse::Ok().finish()
                    }
                }),
            )
    })
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    actix_web::rt::spawn(server);

    let engine = EngineProc::start(&config(&format!("http://{addr}")));
    let c = Client::connect(&engine.url(0), ClientOptions::named("exporter-test"))
        .await
        .unwrap();
    c.register_function("exp::work", |_| async { Ok(json!({})) });
    barrier(&c).await;
    c.trigger("exp::work", json!({})).await.unwrap();
    c.trigger(
        "engine::log::warn",
        json!({"message": "sent to the collector"}),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            let g = got.lock().unwrap();
            g.spans
                .iter()
                .any(|(name, _, service)| name == "exp::work" && service.contains("iii-export"))
                && g.logs
                    .iter()
                    .any(|(sev, body)| sev == "WARN" && body.contains("sent to the collector"))
        })
        .await,
        "collector got spans {:?} logs {:?}",
        got.lock().unwrap().spans,
        got.lock().unwrap().logs
    );
    let g = got.lock().unwrap();
    let (_, trace, _) = g.spans.iter().find(|(n, _, _)| n == "exp::work").unwrap();
    assert_eq!(trace.len(), 32);
}

#[actix::test]
async fn a_collector_that_is_down_costs_nothing_but_a_warning() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let engine = EngineProc::start(&config(&format!("http://127.0.0.1:{port}")));
    let c = Client::connect(&engine.url(0), ClientOptions::named("exporter-test"))
        .await
        .unwrap();
    c.register_function("exp::work", |_| async { Ok(json!({})) });
    barrier(&c).await;
    for _ in 0..200 {
        c.trigger("exp::work", json!({})).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || engine
            .log()
            .contains("OTLP export failed"))
        .await,
        "{}",
        engine.log()
    );
    let spans = c
        .trigger("engine::traces::list", json!({"name": "exp::work"}))
        .await
        .unwrap();
    assert_eq!(spans["total"], 200, "kept in memory all the same");
}
