using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Convert;

// Usage: KvmStorage.Bench SOURCE DESTINATION raw|qcow2|vmdk [zlib|zstd]
if (args.Length < 3 || !ImageFormats.TryParse(args[2], out ImageFormat format))
{
    Console.Error.WriteLine("usage: KvmStorage.Bench SOURCE DESTINATION raw|qcow2|vmdk [zlib|zstd]");
    return 2;
}

var options = new ConvertOptions
{
    Format = format,
    Compress = args.Length > 3,
    CompressionType = args.Length > 3 && args[3] == "zstd" ? CompressionType.Zstd : CompressionType.Zlib,
};
var clock = System.Diagnostics.Stopwatch.StartNew();
using IBlockReader source = BlockReaders.Open(args[0]);
ImageConverter.Convert(source, args[1], options);
Console.Error.WriteLine($"converted in {clock.Elapsed.TotalSeconds:F2} s");
return 0;
