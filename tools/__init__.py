"""Development tools shared by tests, benchmarks and scripts (not part of the installed package):
the web app in a subprocess (`app_server`) and its page driven in Chromium (`app_page`)."""
