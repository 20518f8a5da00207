"""Headless Chromium for checking an HTML page as a person's browser runs it: Debian's
`chromium` and `chromium-driver` packages, driven through Selenium (whose own driver
downloads cannot work offline, so the system's chromedriver is named explicitly)."""
import shutil


class BrowserMissing(Exception):
    """Why no browser can start here (the tests skip with this reason)."""


def chromium_driver(width=1400, height=1000):
    """A headless Chromium that keeps its console ("browser") and network ("performance")
    logs."""
    try:
        from selenium import webdriver
    except ImportError:
        raise BrowserMissing("selenium is not installed (pip install selenium)") from None
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        raise BrowserMissing("no chromium and chromedriver on PATH (Debian: apt-get install "
                             "chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
