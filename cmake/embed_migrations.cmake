# Turns migrations/NNNN_name.sql files into a C array (version, name, SQL text) so the binary
# carries its own schema history. Invoked by add_custom_command with -DOUT=, -DFILES= (paths joined
# with "|") and -DVAR= (the array's name: store__migrations, store__pg_migrations).
set(body "/* Generated from the migrations folder by cmake/embed_migrations.cmake; do not edit. */\n")
string(APPEND body "#include <stddef.h>\n#include \"store_int.h\"\n\n")
string(APPEND body "const struct store__migration ${VAR}[] = {\n")
set(count 0)
string(REPLACE "|" ";" FILES "${FILES}")
foreach(f ${FILES})
  get_filename_component(name ${f} NAME_WE)
  string(SUBSTRING ${name} 0 4 num)
  math(EXPR version "${num}")
  file(READ ${f} hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND body "    {${version}, \"${name}\", (const char[]){${bytes} 0}},\n")
  math(EXPR count "${count} + 1")
endforeach()
string(APPEND body "};\nconst size_t ${VAR}_count = ${count};\n")
file(WRITE ${OUT} "${body}")
