//! Model firmware over HTTP, on both backends: upload (streamed, its own size
//! limit), validation errors as 422 that change nothing, the model showing the
//! version and SHA-256, and downloads with ETag, 304, ranges and 416.

use actix_web::http::{header, StatusCode};
use actix_web::test as atest;
use actix_web::{web, App, HttpRequest};
use onboard_core::domain::ModelCode;
use onboard_core::Onboard;
use onboard_firmware::testing::ImageBuilder;
use onboard_registry::testing::{TestBackend, TestDb};
use onboard_server::app;
use onboard_server::firmware::serve_model_firmware;
use serde_json::{json, Value};

use crate::state_with;

fn token(dir: &std::path::Path) -> String {
    let t = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    format!("Bearer {}", t.trim())
}

pub(crate) fn files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn header_of<B>(res: &actix_web::dev::ServiceResponse<B>, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The body's declared size: what the HTTP/1 encoder sends as Content-Length
/// (the in-process test service does not add that header itself).
fn content_length<B: actix_web::body::MessageBody>(
    res: &actix_web::dev::ServiceResponse<B>,
) -> u64 {
    match res.response().body().size() {
        actix_web::body::BodySize::Sized(n) => n,
        other => panic!("no Content-Length: {other:?}"),
    }
}

pub async fn firmware_is_uploaded_shown_and_downloaded_with_etag_and_ranges(backend: TestBackend) {
    let t = TestDb::new(backend);
    let (state, dir) = state_with(&t, |_| {});
    let auth = token(dir.path());
    let svc = atest::init_service(app(state)).await;
    let res = atest::call_service(
        &svc,
        atest::TestRequest::post()
            .uri("/private/v1/admin/models")
            .insert_header(("authorization", auth.as_str()))
            .set_json(json!({"code": "tempsensor"}))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = atest::read_body_json(res).await;
    assert_eq!(body["firmware"], Value::Null);

    let get = |uri: &str, headers: &[(&str, &str)]| {
        let mut req = atest::TestRequest::get()
            .uri(uri)
            .insert_header(("authorization", auth.as_str()));
        for h in headers {
            req = req.insert_header(*h);
        }
        req.to_request()
    };
    let uri = "/private/v1/admin/models/tempsensor/firmware";
    let res = atest::call_service(&svc, get(uri, &[])).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let body: Value = atest::read_body_json(res).await;
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["message"], "model firmware not found");

    // Larger than server.max_body_bytes (64 KiB): this route has its own limit.
    let image = ImageBuilder::app("1.4.2", "tempsensor", "v5.3.1")
        .code_size(300 * 1024)
        .build();
    let digest = onboard_firmware::hex(&onboard_firmware::sha256(&image));
    let res = atest::call_service(
        &svc,
        atest::TestRequest::put()
            .uri(uri)
            .insert_header(("authorization", auth.as_str()))
            .insert_header(("content-type", "application/octet-stream"))
            .set_payload(image.clone())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = atest::read_body_json(res).await;
    assert_eq!(body["version"], "1.4.2");
    assert_eq!(body["sha256"], digest);
    assert_eq!(body["size"], image.len());
    assert_eq!(body["project"], "tempsensor");
    assert_eq!(body["idf_version"], "v5.3.1");

    let res = atest::call_service(&svc, get("/private/v1/admin/models/tempsensor", &[])).await;
    let model: Value = atest::read_body_json(res).await;
    assert_eq!(model["firmware"]["version"], "1.4.2");
    assert_eq!(model["firmware"]["sha256"], digest);
    let res = atest::call_service(&svc, get("/private/v1/admin/models", &[])).await;
    let list: Value = atest::read_body_json(res).await;
    assert_eq!(list[0]["firmware"]["sha256"], digest);

    // The whole image.
    let etag = format!("\"{digest}\"");
    let res = atest::call_service(&svc, get(uri, &[])).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_of(&res, "etag"), etag);
    assert_eq!(header_of(&res, "x-firmware-version"), "1.4.2");
    assert_eq!(header_of(&res, "accept-ranges"), "bytes");
    assert_eq!(header_of(&res, "cache-control"), "no-cache");
    assert_eq!(content_length(&res), image.len() as u64);
    assert_eq!(header_of(&res, "content-type"), "application/octet-stream");
    assert_eq!(atest::read_body(res).await.to_vec(), image);

    // Conditional: the held ETag is current -> 304 without a body.
    for held in [etag.as_str(), "\"old\", W/\"x\"", "*"] {
        let res = atest::call_service(&svc, get(uri, &[("if-none-match", held)])).await;
        let expected = if held.contains("old") {
            StatusCode::OK
        } else {
            StatusCode::NOT_MODIFIED
        };
        assert_eq!(res.status(), expected, "{held}");
        assert_eq!(header_of(&res, "etag"), etag);
        assert_eq!(header_of(&res, "x-firmware-version"), "1.4.2");
        if expected == StatusCode::NOT_MODIFIED {
            assert!(atest::read_body(res).await.is_empty());
        }
    }

    // Ranges for a resumed download.
    let n = image.len();
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-99".into(), 0, 99),
        (format!("bytes={}-", n - 1000), n - 1000, n - 1),
        ("bytes=-64".into(), n - 64, n - 1),
        (format!("bytes=100-{}", n + 5000), 100, n - 1),
    ];
    for (range, start, end) in cases {
        let res = atest::call_service(&svc, get(uri, &[("range", range.as_str())])).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header_of(&res, "content-range"),
            format!("bytes {start}-{end}/{n}"),
            "{range}"
        );
        assert_eq!(content_length(&res), (end - start + 1) as u64);
        assert_eq!(header_of(&res, "etag"), etag);
        assert_eq!(
            atest::read_body(res).await.to_vec(),
            image[start..=end].to_vec(),
            "{range}"
        );
    }
    let res = atest::call_service(&svc, get(uri, &[("range", &format!("bytes={n}-"))])).await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header_of(&res, "content-range"), format!("bytes */{n}"));
    let body: Value = atest::read_body_json(res).await;
    assert_eq!(body["error"], "range_not_satisfiable");
    // A range for another version of the image (If-Range) gets the whole image.
    let res = atest::call_service(
        &svc,
        get(uri, &[("range", "bytes=0-9"), ("if-range", "\"old\"")]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(atest::read_body(res).await.len(), n);
    let res = atest::call_service(
        &svc,
        get(uri, &[("range", "bytes=0-9"), ("if-range", etag.as_str())]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);

    // Without the admin token: 401, for both directions.
    let res = atest::call_service(&svc, atest::TestRequest::get().uri(uri).to_request()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = atest::call_service(
        &svc,
        atest::TestRequest::put()
            .uri(uri)
            .set_payload(image.clone())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

pub async fn invalid_images_are_422_naming_the_problem_and_change_nothing(backend: TestBackend) {
    let t = TestDb::new(backend);
    let (state, dir) = state_with(&t, |s| s.assets.max_firmware_bytes = 16 * 1024);
    let onboard = state.onboard.clone();
    let auth = token(dir.path());
    let svc = atest::init_service(app(state)).await;
    onboard
        .create_model(
            &onboard_core::Actor::cli(),
            "tempsensor",
            &Default::default(),
        )
        .unwrap();
    let uri = "/private/v1/admin/models/tempsensor/firmware";
    let put = |body: Vec<u8>| {
        atest::TestRequest::put()
            .uri(uri)
            .insert_header(("authorization", auth.as_str()))
            .set_payload(body)
            .to_request()
    };
    let good = ImageBuilder::app("1.0.0", "tempsensor", "v5.3.1").build();
    let res = atest::call_service(&svc, put(good.clone())).await;
    assert_eq!(res.status(), StatusCode::OK);
    let fw_dir = onboard.firmware_dir();
    let before = files(&fw_dir);
    let before_fw = onboard.firmware_info("tempsensor").unwrap();

    let mut wrong_magic = good.clone();
    wrong_magic[0] = 0xE8;
    let mut bad_sha = good.clone();
    let last = bad_sha.len() - 1;
    bad_sha[last] ^= 0x80;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("wrong magic", wrong_magic, "wrong magic"),
        (
            "truncated segment",
            good[..100].to_vec(),
            "truncated segment 0",
        ),
        (
            "corrupted checksum",
            ImageBuilder::app("2.0.0", "t", "v5")
                .corrupt_checksum()
                .build(),
            "checksum mismatch",
        ),
        ("bad SHA-256", bad_sha, "SHA-256 mismatch"),
        (
            "bootloader",
            ImageBuilder::bootloader("v5.3.1").build(),
            "bootloader image",
        ),
    ];
    for (what, body, expected) in cases {
        let res = atest::call_service(&svc, put(body)).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{what}");
        let body: Value = atest::read_body_json(res).await;
        assert_eq!(body["error"], "invalid_firmware", "{what}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{what}: {message}");
        assert_eq!(files(&fw_dir), before, "{what}: no file left");
        assert_eq!(
            onboard.firmware_info("tempsensor").unwrap(),
            before_fw,
            "{what}: the model is unchanged"
        );
    }

    // Too large: refused by its declared length, and cut while streaming when
    // no length is declared.
    let big = ImageBuilder::app("3.0.0", "t", "v5")
        .code_size(32 * 1024)
        .build();
    let res = atest::call_service(&svc, put(big.clone())).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = atest::read_body_json(res).await;
    assert_eq!(body["error"], "payload_too_large");
    let mut req = put(big);
    req.headers_mut().remove(header::CONTENT_LENGTH);
    let res = atest::call_service(&svc, req).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = atest::read_body_json(res).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("assets.max_firmware_bytes"),
        "{body}"
    );
    assert_eq!(files(&fw_dir), before);

    // An unknown model: 404 before the body is read.
    let res = atest::call_service(
        &svc,
        atest::TestRequest::put()
            .uri("/private/v1/admin/models/nope/firmware")
            .insert_header(("authorization", auth.as_str()))
            .set_payload(good.clone())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(files(&fw_dir), before);
    assert_eq!(onboard.firmware_info("tempsensor").unwrap(), before_fw);
}

/// The helper the device route mounts, in an app of its own (no admin auth).
pub async fn the_serving_helper_works_in_any_app(backend: TestBackend) {
    let t = TestDb::new(backend);
    let (state, _dir) = state_with(&t, |_| {});
    let onboard = state.onboard.clone();
    onboard
        .create_model(&onboard_core::Actor::cli(), "aircon", &Default::default())
        .unwrap();
    let svc = atest::init_service(App::new().app_data(web::Data::new(onboard.clone())).route(
        "/fw/{code}",
        web::get().to(
            |req: HttpRequest, onboard: web::Data<Onboard>, code: web::Path<String>| async move {
                let code = ModelCode::parse(&code).unwrap();
                serve_model_firmware(&req, &onboard, &code).await
            },
        ),
    ))
    .await;
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/fw/aircon").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(header_of(&res, "content-type"), "application/json");

    let image = ImageBuilder::app("9.9.9", "aircon", "v5.4").build();
    let staged = {
        let mut s = onboard.stage_firmware().unwrap();
        s.write(&image).unwrap();
        s
    };
    onboard
        .install_firmware(&onboard_core::Actor::cli(), "aircon", staged)
        .unwrap();
    let res = atest::call_service(
        &svc,
        atest::TestRequest::get().uri("/fw/aircon").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header_of(&res, "x-firmware-version"), "9.9.9");
    assert_eq!(atest::read_body(res).await.to_vec(), image);
}
