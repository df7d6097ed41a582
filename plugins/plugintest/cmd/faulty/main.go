// Command faulty is plugintest's misbehaving transport plugin, for tests
// only: install it as commucat-transport-<mode> (see plugintest.Modes).
package main

import "github.com/commucat/commucat/plugins/plugintest"

func main() { plugintest.Main() }
