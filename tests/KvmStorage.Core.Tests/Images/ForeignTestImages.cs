using System.Text.Json;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Luks;
using KvmStorage.Core.Images.Parallels;
using KvmStorage.Core.Images.Qcow1;
using KvmStorage.Core.Images.Qed;
using KvmStorage.Core.Images.Vdi;
using KvmStorage.Core.Images.Vhdx;
using KvmStorage.Core.Images.Vmdk;
using KvmStorage.Core.Images.Vpc;
using KvmStorage.Core.Tests.Support;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Tests.Images;

/// <summary>Images of every foreign format, made once per test class by qemu-img (null when qemu-img is missing).</summary>
public sealed class ForeignTestImages : IDisposable
{
    public static readonly IReadOnlyList<IImageFormatReader> Readers =
    [
        new Qcow1Reader(), new LuksReader(), new QedReader(), new VmdkReader(), new VhdxReader(),
        new ParallelsReader(), new VdiReader(), new VpcReader(),
    ];

    private readonly TempDirectory dir = new();

    public ForeignTestImages()
    {
        if (ExternalTool.Find("qemu-img") is null)
        {
            return;
        }

        Folder = dir.Path;
        string raw = dir.Combine("source.raw");
        using (var stream = new FileStream(raw, FileMode.CreateNew))
        {
            var random = new Random(1234);
            byte[] data = new byte[300 * 1024];
            random.NextBytes(data);
            stream.Write(data);
            stream.Seek(2 * 1024 * 1024, SeekOrigin.Begin);
            stream.Write(data);
            stream.SetLength(4 * 1024 * 1024);
        }

        void Convert(string name, string format, params string[] options)
        {
            var args = new List<string> { "convert", "-f", "raw", "-O", format };
            foreach (string o in options)
            {
                args.Add("-o");
                args.Add(o);
            }

            args.Add(raw);
            args.Add(dir.Combine(name));
            ExternalTool.RunChecked("qemu-img", [.. args]);
        }

        void Create(string name, string format, string size, params string[] extra)
        {
            ExternalTool.RunChecked("qemu-img", ["create", "-q", "-f", format, .. extra, dir.Combine(name), size]);
        }

        Convert("sparse.vmdk", "vmdk", "subformat=monolithicSparse");
        Convert("stream.vmdk", "vmdk", "subformat=streamOptimized");
        Convert("flat.vmdk", "vmdk", "subformat=monolithicFlat");
        Convert("split.vmdk", "vmdk", "subformat=twoGbMaxExtentSparse");
        Create("empty.vmdk", "vmdk", "100M");
        Create("child.vmdk", "vmdk", "4M", "-b", "sparse.vmdk", "-F", "vmdk");
        Convert("dynamic.vdi", "vdi");
        Convert("static.vdi", "vdi", "static=on");
        Create("empty.vdi", "vdi", "8M");
        Convert("dynamic.vhd", "vpc");
        Convert("fixed.vhd", "vpc", "subformat=fixed");
        Create("empty.vhd", "vpc", "8M");
        Convert("dynamic.vhdx", "vhdx");
        Convert("fixed.vhdx", "vhdx", "subformat=fixed");
        Create("empty.vhdx", "vhdx", "8M");
        Convert("image.qcow", "qcow");
        Create("child.qcow", "qcow", "4M", "-b", raw, "-F", "raw");
        Convert("image.qed", "qed");
        Create("child.qed", "qed", "4M", "-b", "source.raw", "-F", "raw");
        ExternalTool.CreateLuksFixture(dir.Combine("image.luks"), "create", "-q", "-f", "luks", "--object", "secret,id=s0,data=secret", "-o", "key-secret=s0,iter-time=10", dir.Combine("image.luks"), "4M");
        Convert("image.parallels", "parallels");
        MakeStreamWithFooter(dir.Combine("stream.vmdk"), dir.Combine("footer.vmdk"));
    }

    /// <summary>The folder holding the images, or null when qemu-img is not installed.</summary>
    public string? Folder { get; }

    public string PathOf(string name) => System.IO.Path.Combine(Folder!, name);

    /// <summary>Rewrites a qemu streamOptimized image the way VMware's one-pass writers do: gdOffset = GD_AT_END and a footer.</summary>
    private static void MakeStreamWithFooter(string source, string target)
    {
        byte[] data = File.ReadAllBytes(source);
        byte[] header = data[..512];
        // qemu's image ends with an EOS marker sector: replace it with footer marker, footer header, EOS marker.
        byte[] body = data[..^512];
        byte[] footerMarker = new byte[512];
        BitConverter.GetBytes(1UL).CopyTo(footerMarker, 0);
        BitConverter.GetBytes(3u).CopyTo(footerMarker, 12);
        byte[] eos = new byte[512];
        byte[] headerAtEnd = (byte[])header.Clone();
        BitConverter.GetBytes(ulong.MaxValue).CopyTo(header, 56);
        header.CopyTo(body, 0);
        File.WriteAllBytes(target, [.. body, .. footerMarker, .. headerAtEnd, .. eos]);
    }

    public static ImageProbe ProbeOf(string path)
    {
        using SafeFileHandle handle = File.OpenHandle(path);
        long length = RandomAccess.GetLength(handle);
        byte[] head = new byte[Math.Min(length, 64 * 1024)];
        int got = RandomAccess.Read(handle, head, 0);
        byte[] tail = new byte[Math.Min(length, 512)];
        RandomAccess.Read(handle, tail, length - tail.Length);
        return new ImageProbe(path, head[..got], tail, (ulong)length);
    }

    /// <summary>The first reader, in priority order, that claims the file.</summary>
    public static IImageFormatReader? Detect(ImageProbe probe) =>
        Readers.OrderBy(r => r.Priority).FirstOrDefault(r => r.Probe(probe));

    public static ImageInfo Inspect(string path, IImageFormatReader? reader = null)
    {
        ImageProbe probe = ProbeOf(path);
        reader ??= Detect(probe) ?? throw new InvalidOperationException($"no reader claims {path}");
        using SafeFileHandle handle = File.OpenHandle(path);
        return reader.ReadInfo(handle, probe, 0);
    }

    public static JsonElement QemuInfo(string path, string? format = null)
    {
        string[] args = format is null ? ["info", "--output=json", path] : ["info", "--output=json", "-f", format, path];
        string json = ExternalTool.RunChecked("qemu-img", args);
        using var doc = JsonDocument.Parse(json);
        return doc.RootElement.Clone();
    }

    public void Dispose() => dir.Dispose();
}
