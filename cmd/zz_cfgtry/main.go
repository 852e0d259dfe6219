package main

import (
	"fmt"
	"os"

	"github.com/tandemdb/tandem/pkg/config"
)

func main() {
	c, err := config.Load(os.Args[1], os.Getenv)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%+v\n", *c)
	fmt.Println(c.Database.DSN())
}
