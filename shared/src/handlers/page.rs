//! `GET /` and `GET /assets/…`: the sign-in page (`web/`), served at the API's
//! own origin so that its calls are same-origin and the refresh cookie never
//! has to cross one. The web function embeds the built files at compile time;
//! this module decides what each answer carries: a strict Content-Security-Policy
//! (no inline script or style, no framing), `nosniff`, no referrer, and caching
//! only for content-hashed assets: `index.html` is never cached, so a deploy
//! is live at the next load.

use lambda_http::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use lambda_http::{Body, Request, Response};

use crate::http::ApiError;

/// What the page may load and do: its own scripts, styles, images and API, and
/// nothing inline, nothing framed, no `<base>`, no form posted anywhere (the
/// forms are handled by script; without it they must not send a password in
/// a URL), and DOM sinks that take strings closed by Trusted Types.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; font-src 'self'; connect-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
     require-trusted-types-for 'script'; trusted-types 'none'";
/// Content-hashed files: a new build has new names, so an old name never changes.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The prefix of the content-hashed files (Vite's `assetsDir`).
pub const ASSETS_PREFIX: &str = "/assets/";

/// One built file: its path under the page's root, its bytes, and the
/// compressed copies the build made of it (API Gateway compresses nothing).
pub struct Asset {
    pub path: &'static str,
    pub body: &'static [u8],
    pub br: Option<&'static [u8]>,
    pub gzip: Option<&'static [u8]>,
}

/// The built page: `index.html` and the files under `/assets/`.
pub struct Site {
    index: &'static [u8],
    assets: &'static [Asset],
    /// The page's own origin when it is `http://localhost:…` (`make dev`):
    /// a request to another loopback address is sent there.
    local_origin: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the built page has no /index.html: build web/ first (npm --prefix web run build)")]
pub struct MissingIndex;

impl Site {
    pub fn new(assets: &'static [Asset]) -> Result<Self, MissingIndex> {
        let index = assets
            .iter()
            .find(|asset| asset.path == "/index.html")
            .ok_or(MissingIndex)?;
        Ok(Site {
            index: index.body,
            assets,
            local_origin: None,
        })
    }

    /// The page's origin (`JWT_ISSUER`'s), if known. Only a local one
    /// (`http://localhost:<port>`) matters: a newcomer who opens
    /// `http://127.0.0.1:<port>/` is redirected to it, since the refresh
    /// cookie, an identity provider's redirect URI and WebAuthn's relying
    /// party all need one origin. Deployed, nothing is redirected.
    pub fn with_origin(mut self, issuer: Option<&str>) -> Self {
        self.local_origin = issuer
            .and_then(crate::browser::origin_of)
            .filter(|origin| origin.starts_with("http://localhost:"));
        self
    }

    /// Where a request that reached the page at another loopback address
    /// than its local origin's belongs.
    fn redirect(&self, req: &Request) -> Option<String> {
        let origin = self.local_origin.as_deref()?;
        let host = req.headers().get(header::HOST)?.to_str().ok()?;
        let hostname = host.rsplit_once(':').map_or(host, |(name, _)| name);
        if !["127.0.0.1", "[::1]"].contains(&hostname) {
            return None;
        }
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        Some(format!("{origin}{target}"))
    }
}

pub async fn handle(site: &Site, req: Request) -> Response<Body> {
    let mut response = match site.redirect(&req) {
        Some(location) => moved(&location),
        None => page(site, &req).unwrap_or_else(ApiError::into_response),
    };
    secure(response.headers_mut());
    if req.method() == Method::HEAD {
        *response.body_mut() = Body::Empty;
    }
    response
}

fn page(site: &Site, req: &Request) -> Result<Response<Body>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().clone(),
            allow: "GET, HEAD",
        });
    }
    let path = req.uri().path();
    if path == "/" {
        return Ok(file(
            site.index,
            "text/html; charset=utf-8",
            "no-store",
            None,
        ));
    }
    let asset = path
        .strip_prefix(ASSETS_PREFIX)
        .filter(|name| !name.is_empty())
        .and_then(|_| site.assets.iter().find(|asset| asset.path == path))
        .ok_or(ApiError::NotFound)?;
    let accepted = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let (body, encoding) = match (asset.br, asset.gzip) {
        (Some(br), _) if accepts(accepted, "br") => (br, Some("br")),
        (_, Some(gzip)) if accepts(accepted, "gzip") => (gzip, Some("gzip")),
        _ => (asset.body, None),
    };
    let mut response = file(body, content_type(asset.path), IMMUTABLE, encoding);
    if asset.br.is_some() || asset.gzip.is_some() {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    Ok(response)
}

/// 308 to `location`: the same request, at the page's own origin.
fn moved(location: &str) -> Response<Body> {
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether an `Accept-Encoding` value accepts `coding` (named, with a q above 0).
fn accepts(accept_encoding: &str, coding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case(coding))
            && parts.all(|param| {
                param
                    .strip_prefix("q=")
                    .is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0))
            })
    })
}

/// `body` as it is sent: compressed with `encoding`, if any.
fn file(
    body: &'static [u8],
    content_type: &'static str,
    cache: &'static str,
    encoding: Option<&'static str>,
) -> Response<Body> {
    // Text goes as text; anything else, compressed text included, as bytes
    // (base64 through API Gateway).
    let text = std::str::from_utf8(body)
        .ok()
        .filter(|_| encoding.is_none() && content_type.contains("charset=utf-8"));
    let body = match text {
        Some(text) => Body::Text(text.to_owned()),
        None => Body::Binary(body.to_vec()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

/// Every answer of the page function, errors included.
fn secure(headers: &mut HeaderMap) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // For browsers that predate frame-ancestors.
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
        (
            header::HeaderName::from_static("permissions-policy"),
            "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
        ),
        // Ignored over plain HTTP (make dev); deployed, the API is HTTPS only.
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

/// By extension: the files a Vite build writes.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml; charset=utf-8",
        Some("json" | "map") => "application/json; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("webp") => "image/webp",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http;

    static ASSETS: &[Asset] = &[
        Asset {
            path: "/index.html",
            body: b"<!doctype html><title>page</title>",
            br: None,
            gzip: None,
        },
        Asset {
            path: "/assets/index-abc123.js",
            body: b"console.log(1)",
            br: Some(b"BR"),
            gzip: Some(b"GZ"),
        },
        Asset {
            path: "/assets/logo-abc123.png",
            body: &[0x89, b'P', b'N', b'G', 0xff],
            br: None,
            gzip: None,
        },
    ];

    fn get(method: &str, path: &str) -> Response<Body> {
        get_accepting(method, path, "")
    }

    fn get_accepting(method: &str, path: &str, accept_encoding: &str) -> Response<Body> {
        let site = Site::new(ASSETS).unwrap();
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://api.example{path}"))
            .header("accept-encoding", accept_encoding)
            .body(Body::Empty)
            .unwrap();
        served(&site, req)
    }

    /// `req` as `site` answers it.
    fn served(site: &Site, req: Request) -> Response<Body> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(handle(site, req))
    }

    fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
        response.headers()[name].to_str().unwrap()
    }

    /// `GET path` with `Host: host` to a site whose origin is `issuer`'s.
    fn at_host(issuer: &str, host: &str, path: &str) -> Response<Body> {
        let site = Site::new(ASSETS).unwrap().with_origin(Some(issuer));
        let req = http::Request::builder()
            .uri(path)
            .header("host", host)
            .body(Body::Empty)
            .unwrap();
        served(&site, req)
    }

    #[test]
    fn another_loopback_address_is_sent_to_the_local_origin_and_nothing_else_is() {
        let local = "http://localhost:9000";
        for host in ["127.0.0.1:9000", "[::1]:9000"] {
            let response = at_host(local, host, "/assets/index-abc123.js?v=1");
            assert_eq!(response.status(), 308, "{host}");
            assert_eq!(
                header(&response, "location"),
                "http://localhost:9000/assets/index-abc123.js?v=1"
            );
            assert_eq!(header(&response, "cache-control"), "no-store");
            assert!(response.headers().contains_key("content-security-policy"));
        }
        // At its own origin, or an origin that is not local (a deployed
        // stack, or make test's 127.0.0.1 issuer): served as it is.
        assert_eq!(at_host(local, "localhost:9000", "/").status(), 200);
        assert_eq!(
            at_host("https://auth.example.com", "127.0.0.1:9000", "/").status(),
            200
        );
        assert_eq!(
            at_host("http://127.0.0.1:9000", "127.0.0.1:9000", "/").status(),
            200
        );
    }

    #[test]
    fn the_root_is_index_html_never_cached_under_a_strict_policy() {
        let response = get("GET", "/");
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type"),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&response, "cache-control"), "no-store");
        let csp = header(&response, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        assert_eq!(header(&response, "referrer-policy"), "no-referrer");
        assert_eq!(header(&response, "x-frame-options"), "DENY");
        assert!(matches!(response.body(), Body::Text(text) if text.contains("<title>page")));
    }

    #[test]
    fn hashed_assets_are_cached_for_a_year_with_their_type() {
        let response = get("GET", "/assets/index-abc123.js");
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "content-type"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(header(&response, "cache-control"), IMMUTABLE);
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");

        let image = get("GET", "/assets/logo-abc123.png");
        assert_eq!(header(&image, "content-type"), "image/png");
        assert!(matches!(image.body(), Body::Binary(bytes) if bytes[0] == 0x89));
    }

    #[test]
    fn compressed_copies_go_to_browsers_that_accept_them() {
        let cases = [
            ("gzip, deflate, br, zstd", Some("br"), &b"BR"[..]),
            ("gzip", Some("gzip"), b"GZ"),
            ("br;q=0, gzip;q=0.5", Some("gzip"), b"GZ"),
            ("BR", Some("br"), b"BR"),
            ("identity", None, b"console.log(1)"),
            ("gzip;q=0", None, b"console.log(1)"),
            ("", None, b"console.log(1)"),
        ];
        for (accept, encoding, body) in cases {
            let response = get_accepting("GET", "/assets/index-abc123.js", accept);
            assert_eq!(
                response
                    .headers()
                    .get("content-encoding")
                    .map(|v| v.to_str().unwrap()),
                encoding,
                "{accept}"
            );
            assert_eq!(header(&response, "vary"), "Accept-Encoding");
            let bytes = match response.body() {
                Body::Text(text) => text.as_bytes(),
                Body::Binary(bytes) => bytes,
                Body::Empty => &[],
                _ => unreachable!(),
            };
            assert_eq!(bytes, body, "{accept}");
        }
        // A file without copies is sent as it is, and varies on nothing.
        let image = get_accepting("GET", "/assets/logo-abc123.png", "br");
        assert!(image.headers().get("content-encoding").is_none());
        assert!(image.headers().get("vary").is_none());
    }

    #[test]
    fn unknown_files_are_a_json_404_that_is_not_cached() {
        for path in [
            "/assets/",
            "/assets/index-old999.js",
            "/index.html",
            "/assets/../index.html",
            "/other",
        ] {
            let response = get("GET", path);
            assert_eq!(response.status(), 404, "{path}");
            assert_eq!(header(&response, "content-type"), "application/json");
            assert_eq!(header(&response, "cache-control"), "no-store");
            assert!(header(&response, "content-security-policy").contains("default-src 'none'"));
        }
    }

    #[test]
    fn head_has_the_headers_and_no_body_and_other_methods_get_405() {
        let head = get("HEAD", "/");
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "cache-control"), "no-store");
        assert!(matches!(head.body(), Body::Empty));

        let post = get("POST", "/");
        assert_eq!(post.status(), 405);
        assert_eq!(header(&post, "allow"), "GET, HEAD");
    }

    #[test]
    fn a_build_without_index_html_is_refused_at_init() {
        static NO_INDEX: &[Asset] = &[Asset {
            path: "/assets/a.js",
            body: b"",
            br: None,
            gzip: None,
        }];
        assert!(Site::new(NO_INDEX).is_err());
    }
}
