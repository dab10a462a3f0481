console.log("nginx-shield demo");
