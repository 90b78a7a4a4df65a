//! A simulated external oracle: a real HTTP server speaking the Mojaloop
//! oracle interface (`GET/POST/DELETE /participants/{Type}/{ID}`), keeping
//! its registrations in memory.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

type Registrations = Arc<Mutex<BTreeMap<String, String>>>;

pub struct Oracle {
    port: u16,
    registrations: Registrations,
    calls: Arc<Mutex<Vec<String>>>,
    server: actix_web::dev::ServerHandle,
}

async fn handle(
    request: HttpRequest,
    body: web::Bytes,
    registrations: web::Data<Registrations>,
    calls: web::Data<Arc<Mutex<Vec<String>>>>,
) -> HttpResponse {
    let key = request.path().to_string();
    let lock =
        |m: &Mutex<BTreeMap<String, String>>| m.lock().map(|g| g.clone()).unwrap_or_default();
    if let Ok(mut log) = calls.lock() {
        log.push(format!("{} {}", request.method(), request.uri()));
    }
    match request.method().as_str() {
        "GET" => match lock(&registrations).get(&key) {
            Some(fsp) => HttpResponse::Ok().json(json!({"partyList": [{"fspId": fsp}]})),
            None => HttpResponse::NotFound()
                .json(json!({"errorInformation": {"errorCode": "3204", "errorDescription": "Party not found"}})),
        },
        "POST" => {
            let fsp = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["fspId"].as_str().map(str::to_string));
            match (fsp, registrations.lock()) {
                (Some(fsp), Ok(mut map)) => {
                    map.insert(key, fsp);
                    HttpResponse::Created().finish()
                }
                _ => HttpResponse::BadRequest().finish(),
            }
        }
        "DELETE" => {
            let removed = registrations.lock().map(|mut map| map.remove(&key).is_some()).unwrap_or(false);
            if removed {
                HttpResponse::NoContent().finish()
            } else {
                HttpResponse::NotFound().finish()
            }
        }
        _ => HttpResponse::MethodNotAllowed().finish(),
    }
}

impl Oracle {
    pub fn start() -> Oracle {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind oracle port");
        let port = listener.local_addr().expect("oracle address").port();
        let registrations: Registrations = Arc::default();
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let (server_registrations, server_calls) = (registrations.clone(), calls.clone());
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(server_registrations.clone()))
                        .app_data(web::Data::new(server_calls.clone()))
                        .default_service(web::to(handle))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)
                .map(|s| s.run());
                match server {
                    Ok(server) => {
                        let _ = tx.send(Some(server.handle()));
                        let _ = server.await;
                    }
                    Err(_) => {
                        let _ = tx.send(None);
                    }
                }
            });
        });
        let server = rx
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .expect("oracle started");
        Oracle {
            port,
            registrations,
            calls,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The FSP registered at `/participants/{Type}/{ID}`.
    pub fn owner(&self, party_path: &str) -> Option<String> {
        self.registrations.lock().ok()?.get(party_path).cloned()
    }

    /// Requests received, as "METHOD uri".
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Stops the server (to test an oracle that is down).
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}
