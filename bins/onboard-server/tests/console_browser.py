#!/usr/bin/env python3
"""Drives the web console in headless Chromium (Debian chromium + chromium-driver,
PyPI selenium) against a running onboard-server. Every check raises on failure;
on success prints a JSON report on stdout.

Usage: console_browser.py BASE_URL ADMIN_TOKEN WORKDIR
With ONBOARD_CONSOLE_SCREENSHOTS=DIR, saves a PNG of each page into DIR.
"""

import csv
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, TOKEN, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
SHOTS = os.environ.get("ONBOARD_CONSOLE_SCREENSHOTS", "")
report = {}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def api(method, path, body=None, token=TOKEN, headers=None, raw=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if raw is not None:
        data = raw
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def post_form(path, fields, cookie, origin=None, site=None):
    """A POST outside the browser, with the session cookie: status and body."""
    h = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie}
    if origin:
        h["Origin"] = origin
    if site:
        h["Sec-Fetch-Site"] = site
    req = urllib.request.Request(
        BASE + path, data=urllib.parse.urlencode(fields).encode(), method="POST", headers=h
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def shot(driver, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SHOTS, name + ".png"))


def register_device(key, serial):
    csr_path = os.path.join(WORK, serial + ".csr")
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", os.path.join(WORK, serial + ".key"), "-out", csr_path,
         "-subj", "/CN=ignored"],
        check=True, capture_output=True,
    )
    with open(csr_path) as f:
        csr = f.read()
    status, body = api("POST", "/public/v1/register",
                       {"serial": serial, "firmware_version": "1.0.0", "csr": csr}, token=key)
    check(status == 201, f"registration: {status} {body!r}")
    return json.loads(body)


def crl_text():
    status, pem = api("GET", "/public/v1/crl", token=None)
    check(status == 200, f"CRL: {status}")
    path = os.path.join(WORK, "console-crl.pem")
    with open(path, "wb") as f:
        f.write(pem)
    out = subprocess.run(["openssl", "crl", "-in", path, "-noout", "-text"],
                         check=True, capture_output=True, text=True)
    return out.stdout


def start_driver(width, height):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--user-data-dir=" + os.path.join(WORK, f"chrome-{width}")]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    return driver


class Attacker(http.server.BaseHTTPRequestHandler):
    """Another origin (another port) whose page posts a revoke form to the console."""
    target = ""

    def do_GET(self):
        page = (
            f'<html><body><form id="f" method="post" action="{self.target}">'
            '<input name="csrf" value="guess"><input name="reason" value="keyCompromise"></form>'
            '<script>document.getElementById("f").submit()</script></body></html>'
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


def main():
    driver = start_driver(1280, 800)
    wait = WebDriverWait(driver, 15)

    def load(el, confirm=False):
        """Clicks what submits a form or follows a link; waits for the next page."""
        old = driver.find_element(By.TAG_NAME, "html")
        el.click()
        if confirm:
            wait.until(ec.alert_is_present()).accept()

        def gone(_):
            # Chromium may answer for a node of the page being replaced with
            # "does not belong to the document" instead of a stale reference.
            try:
                old.is_enabled()
                return False
            except (StaleElementReferenceException, WebDriverException):
                return True

        wait.until(gone)

    try:
        # Not signed in: the console sends us to the sign-in page.
        driver.get(BASE + "/admin/devices")
        check(driver.current_url.endswith("/admin/sign-in"), driver.current_url)
        shot(driver, "sign-in")

        # A wrong token is refused with the API's message.
        driver.find_element(By.ID, "token").send_keys("oat.admin.not-the-token")
        load(driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        err = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
        check("a valid admin token is required" in err.text, err.text)
        check(driver.get_cookie("onboard_console") is None, "no session for a wrong token")
        report["wrong_token_refused"] = True

        # Sign in with the real token.
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        load(driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        wait.until(ec.presence_of_element_located((By.ID, "h-status")))
        check(driver.current_url.endswith("/admin/"), driver.current_url)
        check(driver.find_element(By.CSS_SELECTOR, 'td[data-count="registered"]').text == "0",
              "no devices yet")
        cookie = driver.get_cookie("onboard_console")
        check(cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict",
              f"cookie {cookie}")
        session = "onboard_console=" + cookie["value"]
        report["signed_in"] = True

        # A batch from the console: its key is shown once.
        load(driver.find_element(By.LINK_TEXT, "Bootstrap keys"))
        wait.until(ec.presence_of_element_located((By.ID, "k-batch")))
        driver.find_element(By.ID, "k-batch").send_keys("console-test")
        uses = driver.find_element(By.ID, "k-uses")
        uses.clear()
        uses.send_keys("5")
        load(driver.find_element(By.CSS_SELECTOR, 'button[value="html"]'))
        cell = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#new-keys td.secret")))
        key = cell.text
        check(key.startswith("obk_"), f"key {key}")
        shot(driver, "keys-created")
        driver.get(BASE + "/admin/keys")
        wait.until(ec.presence_of_element_located((By.ID, "keys")))
        check(key not in driver.page_source, "the key is not shown a second time")
        check("console-test" in driver.find_element(By.ID, "keys").text, "the batch is listed")
        shot(driver, "keys")
        report["key_shown_once"] = True
        # The CSV download: the keys once, as an attachment.
        csrf = driver.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")
        status, text = post_form("/admin/keys", {"csrf": csrf, "batch": "csv-batch", "count": "2",
                                                 "format": "csv"}, session, origin=BASE,
                                 site="same-origin")
        rows = list(csv.DictReader(io.StringIO(text)))
        check(status == 200 and len(rows) == 2, f"CSV {status} {text[:200]}")
        check(all(r["key"].startswith("obk_") and r["batch"] == "csv-batch" for r in rows), text)
        report["csv_keys"] = len(rows)
        # Deactivate, activate and delete from the list.
        driver.get(BASE + "/admin/keys?batch=csv-batch")
        load(driver.find_element(By.XPATH, '//table[@id="keys"]//button[text()="Deactivate"]'))
        wait.until(ec.presence_of_element_located((By.XPATH, '//button[text()="Activate"]')))
        status, body = api("GET", "/private/v1/admin/bootstrap-keys?batch=csv-batch")
        states = sorted(k["active"] for k in json.loads(body)["items"])
        check(states == [False, True], f"one key deactivated: {states}")
        load(driver.find_element(By.XPATH, '//button[text()="Activate"]'))
        wait.until(lambda d: not d.find_elements(By.XPATH, '//button[text()="Activate"]'))
        driver.get(BASE + "/admin/keys?batch=csv-batch")
        load(driver.find_element(By.XPATH, '//table[@id="keys"]//button[text()="Delete"]'), confirm=True)
        wait.until(ec.presence_of_element_located((By.ID, "f-batch")))
        status, body = api("GET", "/private/v1/admin/bootstrap-keys?batch=csv-batch")
        items = json.loads(body)["items"]
        check(len(items) == 1 and items[0]["active"], f"one key deleted: {items}")
        status, body = api("GET", "/private/v1/admin/audit?action=bootstrap_key.delete")
        check(json.loads(body)["items"][0]["actor"] == "admin:admin", "delete audited")
        report["key_actions"] = True

        # Over the API with that key: two devices, one with a name that is markup.
        dev = register_device(key, "SN-CONSOLE-1")
        other = register_device(key, "SN-CONSOLE-2")
        status, _ = api("PATCH", f"/private/v1/admin/devices/{other['device_id']}",
                        {"name": "<script>alert(1)</script>"})
        check(status == 200, f"rename: {status}")
        # The key's uses in the list.
        driver.get(BASE + "/admin/keys?batch=console-test")
        check("2 / 5" in driver.find_element(By.ID, "keys").text, "uses shown")

        # The overview counts them.
        load(driver.find_element(By.LINK_TEXT, "Overview"))
        registered = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, 'td[data-count="registered"]'))).text
        check(registered == "2", f"registered count {registered}")
        check(driver.find_element(By.ID, "registrations-day").text == "2", "registrations today")
        shot(driver, "overview")

        # Find the device by serial; the markup name renders as text.
        load(driver.find_element(By.LINK_TEXT, "Devices"))
        wait.until(ec.presence_of_element_located((By.ID, "f-q")))
        check("<script>alert(1)</script>" in driver.find_element(By.TAG_NAME, "table").text,
              "the markup name is shown as text")
        shot(driver, "devices")
        driver.find_element(By.ID, "f-q").send_keys("SN-CONSOLE-1")
        load(driver.find_element(By.CSS_SELECTOR, "form.filters button"))
        wait.until(ec.presence_of_element_located((By.LINK_TEXT, "SN-CONSOLE-1")))
        rows = driver.find_elements(By.CSS_SELECTOR, "tbody tr")
        check(len(rows) == 1, f"{len(rows)} rows for the serial search")
        load(driver.find_element(By.LINK_TEXT, "SN-CONSOLE-1"))
        wait.until(ec.presence_of_element_located((By.ID, "device-status")))
        check(driver.find_element(By.ID, "device-status").text == "registered", "status")
        grants = driver.find_element(By.ID, "grants").text
        check(f"devices/{dev['device_id']}/#" in grants and dev["device_id"] in grants,
              f"broker grants: {grants}")
        shot(driver, "device")
        report["device_found"] = True

        revoke_path = f"/admin/devices/{dev['device_id']}/revoke"
        # Forged POSTs are refused and change nothing: no CSRF token, a wrong one, and
        # the right session from another origin.
        status, text = post_form(revoke_path, {"reason": "keyCompromise"}, session)
        check(status == 403 and "CSRF" in text, f"no CSRF token: {status}")
        status, text = post_form(revoke_path, {"csrf": "0" * 64}, session, origin=BASE,
                                 site="same-origin")
        check(status == 403 and "CSRF" in text, f"wrong CSRF token: {status}")
        csrf = driver.find_element(By.CSS_SELECTOR, 'input[name="csrf"]').get_attribute("value")
        status, text = post_form(revoke_path, {"csrf": csrf}, session,
                                 origin="http://evil.example", site="cross-site")
        check(status == 403 and "cross-site" in text, f"other origin: {status}")
        Attacker.target = BASE + revoke_path
        attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
        threading.Thread(target=attacker.serve_forever, daemon=True).start()
        driver.get(f"http://127.0.0.1:{attacker.server_address[1]}/")
        wait.until(lambda d: "/revoke" in d.current_url)
        check("cross-site request refused" in driver.page_source, driver.page_source[:500])
        attacker.shutdown()
        status, body = api("GET", f"/private/v1/admin/devices/{dev['device_id']}")
        check(json.loads(body)["status"] == "registered", "forged POSTs changed nothing")
        report["forged_posts_refused"] = 4

        # Revoke from the console.
        driver.get(BASE + f"/admin/devices/{dev['device_id']}")
        Select(driver.find_element(By.ID, "reason")).select_by_visible_text("keyCompromise")
        load(driver.find_element(By.CSS_SELECTOR, "button.danger"), confirm=True)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.notice")))
        check(driver.find_element(By.ID, "device-status").text == "revoked", "revoked in the page")
        grants = driver.find_element(By.ID, "grants").text
        check(grants.startswith("None"), f"no broker grant once revoked: {grants}")
        trail = driver.find_element(By.TAG_NAME, "body").text
        check("device.revoke" in trail, "revocation in the audit trail")
        status, body = api("GET", f"/private/v1/admin/devices/{dev['device_id']}")
        details = json.loads(body)
        check(details["status"] == "revoked", f"API: {details}")
        serial = details["certificates"][0]["serial"]
        check(details["certificates"][0]["revocation_reason"] == "keyCompromise", "reason")
        status, body = api("GET", "/private/v1/admin/audit?action=device.revoke")
        events = json.loads(body)["items"]
        check(any(e["actor"].startswith("admin:") for e in events), f"audit actor {events}")
        report["audit_actor"] = events[0]["actor"]
        text = crl_text()
        check(serial.upper() in text.upper().replace(":", ""), "serial in the CRL")
        check("Key Compromise" in text, "reason in the CRL")
        report["revoked_in_api_and_crl"] = serial

        # Models: topic templates and default configuration, as created over the API.
        status, body = api("POST", "/private/v1/admin/models",
                           {"code": "thermo", "name": "Thermostat <v2>",
                            "config": {"interval": 30}})
        check(status == 201, f"model: {status} {body!r}")
        load(driver.find_element(By.LINK_TEXT, "Models"))
        section = wait.until(ec.presence_of_element_located((By.ID, "model-thermo"))).text
        check("Thermostat <v2>" in section and '"interval":30' in section, section)
        check("devices/{device_id}/" in section, f"topic templates: {section}")
        check("none uploaded" in section, section)
        # Firmware upload from the page: a file that is not an image gets the API's
        # message and changes nothing; the image the test wrote becomes current.
        def upload(path):
            driver.find_element(By.ID, "fw-thermo").send_keys(path)
            load(driver.find_element(
                By.CSS_SELECTOR, "#model-thermo form.upload button[type=submit]"))
        upload(os.path.join(WORK, "SN-CONSOLE-1.csr"))
        err = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
        check("image" in err.text.lower() or "magic" in err.text.lower(), err.text)
        status, body = api("GET", "/private/v1/admin/models/thermo")
        check(json.loads(body)["firmware"] is None, f"unchanged after a bad file: {body!r}")
        load(driver.find_element(By.LINK_TEXT, "Models"))
        upload(os.path.join(WORK, "thermo-1.2.0.bin"))
        section = wait.until(ec.presence_of_element_located((By.ID, "model-thermo"))).text
        check("1.2.0" in section and "SHA-256" in section, section)
        status, body = api("GET", "/private/v1/admin/models/thermo")
        fw = json.loads(body)["firmware"]
        check(fw is not None and fw["version"] == "1.2.0", f"API firmware: {body!r}")
        report["firmware_uploaded"] = fw["version"]
        shot(driver, "models")
        report["models"] = True

        # The other device: edit, rotate, decommission.
        driver.get(BASE + f"/admin/devices/{other['device_id']}")
        name = driver.find_element(By.ID, "e-name")
        check(name.get_attribute("value") == "<script>alert(1)</script>", "name in the form")
        name.clear()
        name.send_keys("boiler room 2")
        driver.find_element(By.ID, "e-location").send_keys("Building B")
        cfg = driver.find_element(By.ID, "e-config")
        cfg.clear()
        cfg.send_keys('{"led": "blue"}')
        load(driver.find_element(By.XPATH, '//button[text()="Save"]'))
        wait.until(ec.presence_of_element_located((By.ID, "e-name")))
        status, body = api("GET", f"/private/v1/admin/devices/{other['device_id']}")
        d = json.loads(body)
        check((d["name"], d["location"], d["config"]) == ("boiler room 2", "Building B", {"led": "blue"}),
              f"edited: {d}")
        cfg = driver.find_element(By.ID, "e-config")
        cfg.clear()
        cfg.send_keys("not json")
        load(driver.find_element(By.XPATH, '//button[text()="Save"]'))
        err = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "p.error")))
        check("config is not JSON" in err.text, err.text)
        driver.get(BASE + f"/admin/devices/{other['device_id']}")
        load(driver.find_element(By.XPATH, '//button[text()="Rotate its certificate"]'))
        wait.until(ec.presence_of_element_located((By.ID, "e-name")))
        load(driver.find_element(By.LINK_TEXT, "Rotation"))
        queued = wait.until(ec.presence_of_element_located(
            (By.CSS_SELECTOR, 'td[data-state="QUEUED"]'))).text
        check(queued == "1", f"queued {queued}")
        shot(driver, "rotation")
        driver.get(BASE + f"/admin/devices/{other['device_id']}")
        load(driver.find_element(By.XPATH, '//button[text()="Decommission"]'), confirm=True)
        wait.until(lambda d: d.find_element(By.ID, "device-status").text == "decommissioned")
        report["device_actions"] = True

        # The audit log with filters, and a bad filter's message.
        load(driver.find_element(By.LINK_TEXT, "Audit log"))
        driver.find_element(By.ID, "a-action").send_keys("device.revoke")
        load(driver.find_element(By.CSS_SELECTOR, "form.filters button"))
        wait.until(ec.presence_of_element_located((By.ID, "audit")))
        rows = driver.find_elements(By.CSS_SELECTOR, "#audit tbody tr")
        check(len(rows) == 1 and "SN-CONSOLE-1" in rows[0].text, f"{len(rows)} revoke rows")
        Select(driver.find_element(By.ID, "a-outcome")).select_by_visible_text("failure")
        load(driver.find_element(By.CSS_SELECTOR, "form.filters button"))
        wait.until(ec.presence_of_element_located((By.ID, "audit")))
        check(not driver.find_elements(By.CSS_SELECTOR, "#audit tbody tr"), "no failed revocations")
        driver.get(BASE + "/admin/audit")
        shot(driver, "audit")
        driver.get(BASE + "/admin/audit?outcome=maybe")
        check(driver.find_elements(By.CSS_SELECTOR, "p.error"), "bad outcome refused")
        report["audit_filters"] = True

        # Sign out: the old cookie no longer opens anything.
        load(driver.find_element(By.CSS_SELECTOR, "header button"))
        wait.until(ec.presence_of_element_located((By.ID, "token")))
        check(driver.get_cookie("onboard_console") is None, "cookie cleared")
        req = urllib.request.Request(BASE + "/admin/", headers={"Cookie": session})
        try:
            urllib.request.build_opener(NoRedirect).open(req)
            check(False, "the old cookie still opened the overview")
        except urllib.error.HTTPError as e:
            check(e.code == 303 and e.headers["Location"] == "/admin/sign-in", f"{e.code}")
        report["signed_out"] = True
    finally:
        driver.quit()

    if SHOTS:
        # The phone-size overview.
        phone = start_driver(390, 844)
        try:
            phone.get(BASE + "/admin/sign-in")
            phone.find_element(By.ID, "token").send_keys(TOKEN)
            phone.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            WebDriverWait(phone, 15).until(ec.presence_of_element_located((By.ID, "h-status")))
            shot(phone, "overview-phone")
        finally:
            phone.quit()
    print(json.dumps(report))


main()
