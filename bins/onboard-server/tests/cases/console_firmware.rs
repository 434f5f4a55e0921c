//! The console's firmware upload form, in-process on both backends: the CSRF
//! token, origin and session checked before a byte is stored, then the admin API's
//! staging, size limit, validation and audit.

use actix_web::http::{header, StatusCode};
use actix_web::test as atest;
use onboard_core::Actor;
use onboard_firmware::testing::ImageBuilder;
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::app;

use crate::console::{admin_token, cookie_pair, csrf_of, form, text};
use crate::firmware::files;

/// A `multipart/form-data` body as a browser sends it: (name, file name, bytes).
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----OnboardTestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The models page's upload form: CSRF and origin checked before anything is
/// stored, the same validation and limit as the admin API, audited with the
/// operator's token name.
pub async fn firmware_is_uploaded_from_the_models_page(backend: TestBackend) {
    let t = TestDb::new(backend);
    let (state, dir) = crate::state_with(&t, |s| {
        s.rate_limit.requests_per_minute = 0;
        s.rate_limit.failures_per_hour = 0;
        s.assets.max_firmware_bytes = 16 * 1024;
    });
    let token = admin_token(dir.path());
    let onboard = state.onboard.clone();
    onboard
        .create_model(&Actor::cli(), "tempsensor", &Default::default())
        .unwrap();
    let svc = atest::init_service(app(state)).await;
    let res = atest::call_service(
        &svc,
        form(&format!("token={token}"))
            .uri("/admin/sign-in")
            .to_request(),
    )
    .await;
    let cookie = cookie_pair(
        res.headers()
            .get(header::SET_COOKIE)
            .unwrap()
            .to_str()
            .unwrap(),
    );
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/admin/models")
            .insert_header((header::COOKIE, cookie.clone()))
            .to_request(),
    )
    .await;
    let page = text(&atest::read_body(res).await);
    assert!(
        page.contains(
            r#"action="/admin/models/tempsensor/firmware" enctype="multipart/form-data""#
        ),
        "{page}"
    );
    assert!(page.contains(r#"<label for="fw-tempsensor">"#), "{page}");
    let csrf = csrf_of(&page);
    let fw_dir = onboard.firmware_dir();
    let good = ImageBuilder::app("1.0.0", "tempsensor", "v5.3.1").build();
    let post = |uri: &str, parts: &[(&str, Option<&str>, &[u8])], cookie: Option<&str>| {
        let (ctype, body) = multipart(parts);
        let mut req = atest::TestRequest::post()
            .uri(uri)
            .insert_header((header::CONTENT_TYPE, ctype))
            .set_payload(body);
        if let Some(c) = cookie {
            req = req.insert_header((header::COOKIE, c.to_owned()));
        }
        req
    };
    let uri = "/admin/models/tempsensor/firmware";
    // The form as the page sends it: the session's token, then the image.
    let upload = |uri: &str, image: &[u8]| {
        post(
            uri,
            &[
                ("csrf", None, csrf.as_bytes()),
                ("image", Some("fw.bin"), image),
            ],
            Some(&cookie),
        )
    };

    // Refused before anything is stored: a wrong or missing CSRF token, the image
    // before the token, another origin, no session.
    let refused = [
        (
            "wrong CSRF",
            post(
                uri,
                &[("csrf", None, b"0000"), ("image", Some("a.bin"), &good)],
                Some(&cookie),
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "image first",
            post(
                uri,
                &[
                    ("image", Some("a.bin"), &good),
                    ("csrf", None, csrf.as_bytes()),
                ],
                Some(&cookie),
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site",
            upload(uri, &good).insert_header((header::ORIGIN, "http://evil.example")),
            StatusCode::FORBIDDEN,
        ),
        (
            "cross-site by fetch metadata",
            upload(uri, &good).insert_header(("sec-fetch-site", "cross-site")),
            StatusCode::FORBIDDEN,
        ),
        (
            "no session",
            post(
                uri,
                &[
                    ("csrf", None, csrf.as_bytes()),
                    ("image", Some("a.bin"), &good),
                ],
                None,
            ),
            StatusCode::SEE_OTHER,
        ),
    ];
    for (what, req, status) in refused {
        let res = atest::call_service(&svc, req.to_request()).await;
        assert_eq!(res.status(), status, "{what}");
        assert_eq!(onboard.firmware_info("tempsensor").unwrap(), None, "{what}");
        assert_eq!(
            files(&fw_dir),
            Vec::<String>::new(),
            "{what}: nothing stored"
        );
    }

    // An invalid image: the API's message on the page, nothing changed.
    let mut wrong_magic = good.clone();
    wrong_magic[0] = 0xE8;
    let res = atest::call_service(&svc, upload(uri, &wrong_magic).to_request()).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = text(&atest::read_body(res).await);
    assert!(page.contains("wrong magic"), "{page}");
    assert!(page.contains(r#"class="error""#), "{page}");
    assert_eq!(onboard.firmware_info("tempsensor").unwrap(), None);
    assert_eq!(files(&fw_dir), Vec::<String>::new());

    // Too large: refused by its declared length with a console page, and cut at the
    // limit when streamed without one.
    let big = ImageBuilder::app("3.0.0", "t", "v5")
        .code_size(32 * 1024)
        .build();
    let res = atest::call_service(&svc, upload(uri, &big).to_request()).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(res.headers().get(header::CONTENT_SECURITY_POLICY).is_some());
    let page = text(&atest::read_body(res).await);
    assert!(
        page.contains("assets.max_firmware_bytes") && page.contains("<html"),
        "{page}"
    );
    assert_eq!(files(&fw_dir), Vec::<String>::new());
    let mut req = upload(uri, &big).to_request();
    req.headers_mut().remove(header::CONTENT_LENGTH);
    let res = atest::call_service(&svc, req).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let page = text(&atest::read_body(res).await);
    assert!(page.contains("assets.max_firmware_bytes"), "{page}");
    assert_eq!(files(&fw_dir), Vec::<String>::new());

    // An unknown model: 404.
    let res = atest::call_service(
        &svc,
        upload("/admin/models/nope/firmware", &good).to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // The right form: installed, shown on the page, audited as the operator.
    let res = atest::call_service(&svc, upload(uri, &good).to_request()).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers().get(header::LOCATION).unwrap(),
        "/admin/models#model-tempsensor"
    );
    let fw = onboard.firmware_info("tempsensor").unwrap().unwrap();
    assert_eq!(fw.version, "1.0.0");
    assert_eq!(fw.size, good.len() as u64);
    assert_eq!(files(&fw_dir).len(), 1, "{:?}", files(&fw_dir));
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/admin/models")
            .insert_header((header::COOKIE, cookie.clone()))
            .to_request(),
    )
    .await;
    let page = text(&atest::read_body(res).await);
    assert!(page.contains(&fw.sha256.to_string()), "{page}");
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get()
            .uri("/private/v1/admin/audit?action=model.firmware.upload")
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request(),
    )
    .await;
    let audit: serde_json::Value = atest::read_body_json(res).await;
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{audit}");
    assert_eq!(items[0]["actor"], "admin:admin", "{audit}");
    assert_eq!(items[0]["outcome"], "success", "{audit}");
}
