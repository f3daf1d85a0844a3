using KvmStorage.Fuzz;
using SharpFuzz;

// Usage under afl-fuzz: dotnet KvmStorage.Fuzz.dll <target>   (input on stdin, as SharpFuzz's out-of-process mode)
//        replay:        dotnet KvmStorage.Fuzz.dll <target> <file>...
if (args.Length == 0 || !FuzzTargets.All.TryGetValue(args[0], out Action<byte[]>? target))
{
    Console.Error.WriteLine($"usage: KvmStorage.Fuzz <{string.Join('|', FuzzTargets.All.Keys)}> [file...]");
    return 2;
}

if (args.Length > 1)
{
    foreach (string file in args.Skip(1))
    {
        target(File.ReadAllBytes(file));
    }

    return 0;
}

Fuzzer.OutOfProcess.Run(stream =>
{
    using var buffer = new MemoryStream();
    stream.CopyTo(buffer);
    target(buffer.ToArray());
});
return 0;
