//! cairn-builder executes the stage graph: build context, COPY/ADD, RUN in a rootless sandbox, cache. Filled in by the build, RUN and cache issues.
