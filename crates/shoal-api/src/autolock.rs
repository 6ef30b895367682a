//! Autolock (as Swarm's): the managers' data keys wrapped by an unlock key that no disk holds.
//!
//! - `POST /v1/cluster/autolock {"autolock": true|false}` turns it on (a new unlock key, shown
//!   once in the answer) or off; `GET /v1/cluster/unlock-key` shows the current key (admins
//!   only: it is a secret); `POST /v1/cluster/unlock-key/rotate` replaces it. The key is
//!   replicated in the state (whose log and snapshots are sealed), and each manager rewraps its
//!   own data key to match (`shoal` daemon's `follow_autolock`).
//! - A manager whose key file is wrapped starts **locked**: before anything else it serves only
//!   `POST /v1/cluster/unlock {"unlock_key": "…"}` on its API socket ([`serve_locked`]); every
//!   other request gets `503 locked` saying what to do.

use crate::app::{App, AppError, AppResult};
use crate::server::{ApiError, JsonBody};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shoal_manager::{Consistency, Manager};
use shoal_state::Command;
use shoal_types::SecretString;
use std::sync::Arc;

/// `POST /v1/cluster/autolock`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct AutolockRequest {
    pub autolock: bool,
}

/// Whether autolock is on, and the unlock key when asked for or just made. No `Debug`.
#[derive(Deserialize, Serialize, schemars::JsonSchema)]
pub struct AutolockAnswer {
    pub autolock: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<String>,
}

/// `POST /v1/cluster/unlock` on a locked manager. No `Debug`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[derive(schemars::JsonSchema)]
pub struct UnlockRequest {
    pub unlock_key: String,
}

impl App {
    /// Turns autolock on (a new unlock key, returned) or off. Turning it on again changes
    /// nothing and returns no key (`unlock_key` shows it).
    pub async fn set_autolock(&self, on: bool) -> AppResult<AutolockAnswer> {
        let current = self.read(Consistency::Linearizable, |s| s.unlock_key().is_some()).await?;
        match (on, current) {
            (true, true) => Ok(AutolockAnswer { autolock: true, unlock_key: None }),
            (false, false) => Ok(AutolockAnswer { autolock: false, unlock_key: None }),
            (true, false) => {
                let key = new_key()?;
                self.write(Command::SetUnlockKey { key: Some(SecretString(key.clone())) }).await?;
                tracing::info!("autolock turned on");
                Ok(AutolockAnswer { autolock: true, unlock_key: Some(key) })
            }
            (false, true) => {
                self.write(Command::SetUnlockKey { key: None }).await?;
                tracing::info!("autolock turned off");
                Ok(AutolockAnswer { autolock: false, unlock_key: None })
            }
        }
    }

    /// The current unlock key (none: autolock is off).
    pub async fn unlock_key(&self) -> AppResult<AutolockAnswer> {
        let key = self.read(Consistency::Linearizable, |s| s.unlock_key().map(str::to_string)).await?;
        Ok(AutolockAnswer { autolock: key.is_some(), unlock_key: key })
    }

    /// A new unlock key; the managers rewrap their data keys with it. A manager that is down
    /// meanwhile still opens with the previous key.
    pub async fn rotate_unlock_key(&self) -> AppResult<AutolockAnswer> {
        let on = self.read(Consistency::Linearizable, |s| s.unlock_key().is_some()).await?;
        if !on {
            return Err(AppError::conflict(
                "autolock is off: turn it on with `shoal cluster update --autolock=true`",
            ));
        }
        let key = new_key()?;
        self.write(Command::SetUnlockKey { key: Some(SecretString(key.clone())) }).await?;
        tracing::info!("unlock key rotated");
        Ok(AutolockAnswer { autolock: true, unlock_key: Some(key) })
    }
}

fn new_key() -> AppResult<String> {
    shoal_raft::seal::new_unlock_key().map_err(|e| AppError::new(crate::app::Kind::Unavailable, e))
}

pub fn routes() -> Router<Arc<Manager>> {
    Router::new()
        .route("/v1/cluster/autolock", post(set_autolock))
        .route("/v1/cluster/unlock-key", get(unlock_key))
        .route("/v1/cluster/unlock-key/rotate", post(rotate))
        .route("/v1/cluster/unlock", post(not_locked))
}

async fn set_autolock(
    State(m): State<Arc<Manager>>,
    JsonBody(r): JsonBody<AutolockRequest>,
) -> Result<Json<AutolockAnswer>, ApiError> {
    Ok(Json(App::new(m).set_autolock(r.autolock).await?))
}

async fn unlock_key(State(m): State<Arc<Manager>>) -> Result<Json<AutolockAnswer>, ApiError> {
    Ok(Json(App::new(m).unlock_key().await?))
}

async fn rotate(State(m): State<Arc<Manager>>) -> Result<Json<AutolockAnswer>, ApiError> {
    Ok(Json(App::new(m).rotate_unlock_key().await?))
}

/// `cluster unlock` against a manager that is not locked.
async fn not_locked() -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "conflict", "this manager is not locked: nothing to unlock")
}

/// Whether an unlock key opens this manager's data key.
pub type TryUnlock = Arc<dyn Fn(&str) -> Result<(), shoal_raft::seal::KeyError> + Send + Sync>;

/// Serves a locked manager's API socket until an unlock key opens its data key (`try_unlock`
/// says whether it does); returns that key. The socket stays bound for the daemon's full API.
pub async fn serve_locked(socket: &crate::ApiSocket, try_unlock: TryUnlock) -> std::io::Result<String> {
    let listener = tokio::net::UnixListener::from_std(socket.listener.try_clone()?)?;
    let (tx, rx) = tokio::sync::watch::channel(None::<String>);
    let tx = Arc::new(tx);
    let unlock = move |JsonBody(r): JsonBody<UnlockRequest>| {
        let (tx, try_unlock) = (tx.clone(), try_unlock.clone());
        async move {
            use shoal_raft::seal::KeyError;
            match try_unlock(&r.unlock_key) {
                Ok(()) => {
                    tracing::info!("unlocked: starting");
                    let _ = tx.send(Some(r.unlock_key));
                    Ok(Json(serde_json::json!({ "unlocked": true })))
                }
                Err(e @ KeyError::WrongUnlockKey) => {
                    tracing::warn!("a wrong unlock key was given");
                    Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong_unlock_key", e.to_string()))
                }
                Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid", e.to_string())),
            }
        }
    };
    let router = Router::new().route("/v1/cluster/unlock", post(unlock)).fallback(|| async {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "locked",
            "this manager is locked (autolock): run `shoal cluster unlock` and give the cluster's unlock key \
             (`shoal cluster unlock-key` on an unlocked manager)",
        )
    });
    let mut done = rx.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = done.wait_for(Option::is_some).await;
        })
        .await?;
    let key = rx.borrow().clone();
    key.ok_or_else(|| std::io::Error::other("the locked API stopped before an unlock"))
}
