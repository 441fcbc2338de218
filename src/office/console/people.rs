//! The console's pages about people: login and logout, enrolment through a
//! one-time link (password, and the signing key the browser makes or
//! imports), and the audit trail.
//!
//! The login and enrolment forms come before any session, so their CSRF
//! token is double-submitted: a random cookie and the same value in the
//! form, which a page of another site can neither read nor set.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;

use crate::protocol::PublicKey;
use crate::store::StoreError;
use crate::store::office::UserRole;

use super::html::{self, csrf_field, esc};
use super::{Console, FormBody, auth, client_address, now_seconds, role_label, see_other};

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", axum::routing::post(logout))
        .route("/console/enrol", get(enrol_page).post(enrol))
        .route("/console/audit", get(audit_page))
        .route("/console/static/console.js", get(script))
        .route("/console/static/console.css", get(style))
}

fn asset(body: &'static str, mime: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, mime)], body).into_response();
    html::secure_headers(&mut response);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn script() -> Response {
    asset(
        include_str!("assets/console.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn style() -> Response {
    asset(
        include_str!("assets/console.css"),
        "text/css; charset=utf-8",
    )
}

/// A page of a form made before login, with its double-submit cookie.
fn pre_login_page(status: StatusCode, title: &str, body: impl FnOnce(&str) -> String) -> Response {
    let token = auth::random_token();
    let mut response = html::page(status, title, None, &body(&token));
    if let Ok(cookie) = HeaderValue::from_str(&auth::set_cookie(auth::FORM_COOKIE, &token, 3600)) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Whether a pre-login form's CSRF field matches its cookie.
fn double_submitted(headers: &HeaderMap, form: &FormBody) -> bool {
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, auth::FORM_COOKIE));
    match (cookie, form.get("csrf")) {
        (Some(cookie), Some(field)) => !cookie.is_empty() && auth::same_secret(cookie, field),
        _ => false,
    }
}

fn login_form(status: StatusCode, notice: &str, name: &str) -> Response {
    pre_login_page(status, "登录", |csrf| {
        format!(
            "{}<form method=\"post\" action=\"/console/login\" class=\"card\">{}\
             <label>姓名 <input name=\"name\" value=\"{}\" autocomplete=\"username\" required></label>\
             <label>密码 <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\" id=\"login\">登录</button></form>",
            if notice.is_empty() {
                String::new()
            } else {
                format!("<p class=\"message\">{}</p>", esc(notice))
            },
            csrf_field(csrf),
            esc(name)
        )
    })
}

async fn login_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    if console.session(&headers).await.is_ok() {
        return see_other("/console");
    }
    login_form(StatusCode::OK, "", "")
}

async fn login(State(console): State<Console>, request: Request) -> Response {
    let address = client_address(request.extensions().get::<ConnectInfo<SocketAddr>>());
    let headers = request.headers().clone();
    let Ok(body) = axum::body::to_bytes(request.into_body(), 64 * 1024).await else {
        return login_form(StatusCode::PAYLOAD_TOO_LARGE, "表单过大。", "");
    };
    let form = FormBody::parse(&body);
    if !double_submitted(&headers, &form) {
        return login_form(
            StatusCode::FORBIDDEN,
            "表单已过期或来源不明（CSRF 校验失败）。请重新登录。",
            "",
        );
    }
    let name = form.text("name").trim().to_owned();
    let password = form.text("password");
    let now = now_seconds();
    let held = console
        .limiter
        .lock()
        .expect("limiter")
        .check(&name, address, now);
    if let Err(wait) = held {
        let _ = console
            .audit(&name, "login refused: rate limit".into(), name.as_bytes())
            .await;
        return login_form(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("登录失败次数过多，请 {} 分钟后再试。", (wait + 59) / 60),
            &name,
        );
    }
    let lookup = name.clone();
    let found = match console.db(move |store| Ok(store.login_of(&lookup)?)).await {
        Ok(found) => found,
        Err(page) => return page,
    };
    // The hash is checked even for an unknown name, so that the answer's
    // time does not tell which names exist.
    let (user, stored) = match found {
        Some((user, stored)) => (Some(user), stored),
        None => (None, DUMMY_HASH.to_owned()),
    };
    let matches = tokio::task::spawn_blocking(move || auth::password_matches(&password, &stored))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(user) if matches => user,
        _ => {
            console
                .limiter
                .lock()
                .expect("limiter")
                .failed(&name, address, now);
            let _ = console
                .audit(&name, "login failed".into(), name.as_bytes())
                .await;
            return login_form(StatusCode::UNAUTHORIZED, "姓名或密码不对。", &name);
        }
    };
    console.limiter.lock().expect("limiter").succeeded(&name);
    let token = auth::random_token();
    let csrf = auth::random_token();
    let (hash, who) = (auth::token_hash(&token), user.name.clone());
    let opened = console
        .db(move |store| {
            Ok(store.create_session(&hash, &who, &csrf, now + auth::SESSION_SECONDS, now)?)
        })
        .await;
    if let Err(page) = opened {
        return page;
    }
    if let Err(page) = console
        .audit(&user.name, "login".into(), user.name.as_bytes())
        .await
    {
        return page;
    }
    let mut response = see_other("/console");
    for cookie in [
        auth::set_cookie(auth::SESSION_COOKIE, &token, auth::SESSION_SECONDS),
        auth::set_cookie(auth::FORM_COOKIE, "", 0),
    ] {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// An argon2id hash of a random password, checked against when the name is
/// unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0e3Qb9i8sXl8bX1yCvHf7JtlQjY0xwM0b7p3zqgq6xk";

async fn logout(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let form = FormBody::parse(&body);
    let session = match console.posted(&headers, form.get("csrf")).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let hash = session.token_hash.clone();
    if let Err(page) = console.db(move |store| Ok(store.end_session(&hash)?)).await {
        return page;
    }
    let _ = console
        .audit(&session.user.name, "logout".into(), b"")
        .await;
    let mut response = see_other("/console/login");
    if let Ok(value) = HeaderValue::from_str(&auth::set_cookie(auth::SESSION_COOKIE, "", 0)) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn enrol_refused(status: StatusCode, text: &str) -> Response {
    html::message(status, "登记链接无效", None, text)
}

const LINK_INVALID: &str = "这个登记链接无效、已使用或已过期。请向管理员索取新的登记链接（gongkai office user add，已登记的人为 gongkai office user reenrol）。";

async fn enrol_page(State(console): State<Console>, Query(query): Query<TokenQuery>) -> Response {
    let hash = auth::token_hash(&query.token);
    let user = match console
        .db(move |store| Ok(store.enrolment(&hash, now_seconds())?))
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => return enrol_refused(StatusCode::NOT_FOUND, LINK_INVALID),
        Err(page) => return page,
    };
    enrol_form(StatusCode::OK, &query.token, &user.name, user.role, "")
}

fn enrol_form(
    status: StatusCode,
    token: &str,
    name: &str,
    role: UserRole,
    notice: &str,
) -> Response {
    let key_part = if role.signs() {
        "<fieldset id=\"key\"><legend>签名密钥</legend>\
         <p>您的签名密钥只保存在本浏览器中，不可导出，服务器只收到公钥。请在今后审核、签名时使用同一台电脑的同一浏览器。</p>\
         <label><input type=\"radio\" name=\"key_source\" value=\"generate\" checked> 在本浏览器生成新密钥</label>\
         <label><input type=\"radio\" name=\"key_source\" value=\"import\"> 导入 gongkai keygen 生成的密钥文件 \
         <input type=\"file\" id=\"seed-file\"></label>\
         <input type=\"hidden\" name=\"public_key\" id=\"public-key\" value=\"\">\
         <p class=\"status\" id=\"key-status\"></p></fieldset>"
    } else {
        ""
    };
    pre_login_page(status, "账号登记", |csrf| {
        format!(
            "{}<form method=\"post\" action=\"/console/enrol\" class=\"card\" id=\"enrol-form\" \
             data-enrol-user=\"{}\" data-needs-key=\"{}\">{}\
             <input type=\"hidden\" name=\"token\" value=\"{}\">\
             <p>姓名：<strong>{}</strong>　身份：{}</p>\
             <label>设置密码（至少 {} 个字符）<input name=\"password\" type=\"password\" autocomplete=\"new-password\" required></label>\
             <label>再次输入密码 <input name=\"password2\" type=\"password\" autocomplete=\"new-password\" required></label>\
             {key_part}<button type=\"submit\" id=\"enrol\">完成登记</button></form>",
            if notice.is_empty() {
                String::new()
            } else {
                format!("<p class=\"message\">{}</p>", esc(notice))
            },
            esc(name),
            role.signs(),
            csrf_field(csrf),
            esc(token),
            esc(name),
            role_label(role),
            auth::MIN_PASSWORD_CHARS,
        )
    })
}

async fn enrol(State(console): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let form = FormBody::parse(&body);
    let token = form.text("token");
    let hash = auth::token_hash(&token);
    let lookup = hash.clone();
    let user = match console
        .db(move |store| Ok(store.enrolment(&lookup, now_seconds())?))
        .await
    {
        Ok(Some(user)) => user,
        Ok(None) => return enrol_refused(StatusCode::NOT_FOUND, LINK_INVALID),
        Err(page) => return page,
    };
    let again = |status, notice: &str| enrol_form(status, &token, &user.name, user.role, notice);
    if !double_submitted(&headers, &form) {
        return again(
            StatusCode::FORBIDDEN,
            "表单已过期或来源不明（CSRF 校验失败），请重新提交。",
        );
    }
    let password = form.text("password");
    if password.chars().count() < auth::MIN_PASSWORD_CHARS {
        return again(
            StatusCode::BAD_REQUEST,
            &format!("密码至少需要 {} 个字符。", auth::MIN_PASSWORD_CHARS),
        );
    }
    if password != form.text("password2") {
        return again(StatusCode::BAD_REQUEST, "两次输入的密码不一致。");
    }
    let public_key = if user.role.signs() {
        match PublicKey::from_base64(&form.text("public_key")) {
            Ok(key) => Some(key),
            Err(_) => {
                return again(
                    StatusCode::BAD_REQUEST,
                    "没有收到有效的签名公钥：本浏览器可能不支持 Ed25519，或密钥文件无法读取。",
                );
            }
        }
    } else {
        None
    };
    let users = match console.db(|store| Ok(store.users()?)).await {
        Ok(users) => users,
        Err(page) => return page,
    };
    if let Some(key) = &public_key {
        if users
            .iter()
            .any(|u| u.public_key.as_deref() == Some(&key.to_base64()))
        {
            return again(
                StatusCode::CONFLICT,
                "这把密钥已由他人登记：每人须使用自己的密钥。",
            );
        }
    }
    let Ok(Ok(password_hash)) =
        tokio::task::spawn_blocking(move || auth::hash_password(&password)).await
    else {
        return again(
            StatusCode::INTERNAL_SERVER_ERROR,
            "服务器未能保存密码，请重试。",
        );
    };
    let key_text = public_key.as_ref().map(PublicKey::to_base64);
    let stored_key = key_text.clone();
    let done = match console
        .db(move |store| {
            match store.complete_enrolment(
                &hash,
                now_seconds(),
                &password_hash,
                stored_key.as_deref(),
            ) {
                Ok(done) => Ok(Ok(done)),
                Err(StoreError::Refused(why)) => Ok(Err(why)),
                Err(e) => Err(e.into()),
            }
        })
        .await
    {
        Ok(Ok(done)) => done,
        Ok(Err(why)) => {
            return html::message(StatusCode::CONFLICT, "不能登记这个密钥", None, &why);
        }
        Err(page) => return page,
    };
    let Some(user) = done else {
        return enrol_refused(StatusCode::NOT_FOUND, LINK_INVALID);
    };
    let what = match &public_key {
        Some(key) => format!(
            "enrolled as {} with key {}",
            user.role.as_str(),
            key.key_id()
        ),
        None => format!("enrolled as {}", user.role.as_str()),
    };
    if let Err(page) = console
        .audit(&user.name, what, key_text.unwrap_or_default().as_bytes())
        .await
    {
        return page;
    }
    html::page(
        StatusCode::OK,
        "登记完成",
        None,
        &format!(
            "<p class=\"message\" id=\"enrolled\">{}，您已完成登记。</p><p><a href=\"/console/login\">前往登录</a></p>",
            esc(&user.name)
        ),
    )
}

async fn audit_page(State(console): State<Console>, headers: HeaderMap) -> Response {
    let session = match console.session(&headers).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let entries = match console.db(|store| Ok(store.audit_entries()?)).await {
        Ok(entries) => entries,
        Err(page) => return page,
    };
    let rows: String = entries
        .iter()
        .rev()
        .take(500)
        .map(|line| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"hash\">{}</td></tr>",
                esc(&line.at),
                esc(&line.who),
                esc(&line.what),
                esc(line.payload_sha256.as_deref().unwrap_or(""))
            )
        })
        .collect();
    html::page(
        StatusCode::OK,
        "操作记录",
        Some(&session.viewer()),
        &format!(
            "<table class=\"list\"><thead><tr><th>时间</th><th>操作人</th><th>操作</th>\
             <th>内容 SHA-256</th></tr></thead><tbody>{rows}</tbody></table>"
        ),
    )
}
