# Puts warmctl's shell completions and man pages where bash-completion, zsh, fish and man find
# them, and its systemd units (warmctl-systemd(7)) where systemd finds them. warmctl itself is a
# Python package: `pipx install .` (or `pip install .`); the units run $(BINDIR)/warmctl.
#
#   make install                      # under PREFIX=/usr/local, then mandb
#   make install DESTDIR=/tmp/stage   # staged (packaging); no mandb
#   make uninstall                    # same variables as install
#   make docs                         # regenerate completions/ and man/ (scripts/gen-docs)
#   make check-docs                   # fail if they are stale
#
# Any directory can be overridden, e.g. FISH_COMPLETION_DIR=/etc/fish/completions for a fish
# that does not read $(PREFIX)/share (Debian's, when XDG_DATA_DIRS is unset).

PREFIX ?= /usr/local
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASH_COMPLETION_DIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPLETION_DIR ?= $(DATADIR)/zsh/site-functions
FISH_COMPLETION_DIR ?= $(DATADIR)/fish/vendor_completions.d
BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec/warmctl
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
SYSTEMCTL ?= systemctl
INSTALL ?= install
MANDB ?= mandb
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

MANPAGES := $(sort $(wildcard man/*.1))
MANPAGES7 := $(sort $(wildcard man/*.7))
UNITS := warmctl@.service warmctl-snapshot@.service warmctl-snapshot@.timer

.PHONY: all install uninstall docs check-docs

all:
	@echo "targets: install, uninstall, docs, check-docs (see the Makefile's first lines)"

install:
	$(INSTALL) -d $(DESTDIR)$(BASH_COMPLETION_DIR) $(DESTDIR)$(ZSH_COMPLETION_DIR) \
		$(DESTDIR)$(FISH_COMPLETION_DIR) $(DESTDIR)$(MANDIR)/man1
	$(INSTALL) -m 644 completions/warmctl.bash $(DESTDIR)$(BASH_COMPLETION_DIR)/warmctl
	$(INSTALL) -m 644 completions/_warmctl $(DESTDIR)$(ZSH_COMPLETION_DIR)/_warmctl
	$(INSTALL) -m 644 completions/warmctl.fish $(DESTDIR)$(FISH_COMPLETION_DIR)/warmctl.fish
	$(INSTALL) -m 644 $(MANPAGES) $(DESTDIR)$(MANDIR)/man1/
	$(if $(MANPAGES7),$(INSTALL) -d $(DESTDIR)$(MANDIR)/man7 && $(INSTALL) -m 644 $(MANPAGES7) $(DESTDIR)$(MANDIR)/man7/)
	$(INSTALL) -d $(DESTDIR)$(LIBEXECDIR) $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	$(INSTALL) -m 755 systemd/warmctl-service $(DESTDIR)$(LIBEXECDIR)/warmctl-service
	for unit in $(UNITS); do \
		src=systemd/$$unit; [ -e $$src ] || src=$$src.in; \
		sed -e 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' -e 's|@BINDIR@|$(BINDIR)|g' $$src \
			>$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit && chmod 644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit; \
	done
	$(daemon-reload)
	$(update-mandb)

uninstall:
	rm -f $(DESTDIR)$(BASH_COMPLETION_DIR)/warmctl $(DESTDIR)$(ZSH_COMPLETION_DIR)/_warmctl \
		$(DESTDIR)$(FISH_COMPLETION_DIR)/warmctl.fish
	rm -f $(DESTDIR)$(MANDIR)/man1/warmctl.1 $(DESTDIR)$(MANDIR)/man1/warmctl-*.1 \
		$(DESTDIR)$(MANDIR)/man7/warmctl-*.7
	rm -f $(DESTDIR)$(LIBEXECDIR)/warmctl-service $(addprefix $(DESTDIR)$(SYSTEMD_UNIT_DIR)/,$(UNITS))
	-rmdir $(DESTDIR)$(LIBEXECDIR) 2>/dev/null
	$(daemon-reload)
	$(update-mandb)

docs:
	$(PYTHON) scripts/gen-docs

check-docs:
	$(PYTHON) scripts/gen-docs --check

# whatis and man -k read mandb's index. Every manpath is updated (quickly: only what changed),
# not just $(MANDIR): on Debian /usr/local/man is a link to share/man and man reads the index
# under that name. A staged install (DESTDIR) is indexed where it lands.
define update-mandb
@if [ -z "$(DESTDIR)" ] && command -v $(MANDB) >/dev/null 2>&1; then \
	echo "$(MANDB) -q"; $(MANDB) -q || true; fi
endef

# systemd reads unit files again only when told; not for a staged install, nor without systemd.
define daemon-reload
@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	echo "$(SYSTEMCTL) daemon-reload"; $(SYSTEMCTL) daemon-reload || true; fi
endef
