# Puts warmctl's shell completions and man pages where bash-completion, zsh, fish and man find
# them. warmctl itself is a Python package: `pipx install .` (or `pip install .`).
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
INSTALL ?= install
MANDB ?= mandb
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

MANPAGES := $(sort $(wildcard man/*.1))

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
	$(update-mandb)

uninstall:
	rm -f $(DESTDIR)$(BASH_COMPLETION_DIR)/warmctl $(DESTDIR)$(ZSH_COMPLETION_DIR)/_warmctl \
		$(DESTDIR)$(FISH_COMPLETION_DIR)/warmctl.fish
	rm -f $(DESTDIR)$(MANDIR)/man1/warmctl.1 $(DESTDIR)$(MANDIR)/man1/warmctl-*.1
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
