/* A shared library that is not a Dialtone plugin. */
int some_function(void) { return 42; }
