using System.Text.Json;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Map;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

/// <summary>
/// <see cref="ImageMapper"/> against <c>qemu-img map --output=json</c>, field by field and entry by entry (start, length,
/// depth, present, zero, data, offset), on images qemu made: raw files of odd sizes with holes, qcow2 with holes, zero
/// clusters (plain and preallocated), compressed clusters, a partly written last cluster, metadata preallocation,
/// subclusters, encryption, 2- and 3-level chains with shorter and longer layers, and every other format qemu maps.
/// </summary>
public sealed class ImageMapperTests : IDisposable
{
    private const string Secret = "map-secret";

    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    public static TheoryData<string> Cases() => new()
    {
        "raw-holes", "raw-odd-size", "raw-tiny", "qcow2-mixed", "qcow2-v2", "qcow2-metadata", "qcow2-metadata-zeroed",
        "qcow2-subclusters", "qcow2-luks", "chain-2", "chain-3", "chain-raw-base", "vmdk", "vmdk-stream", "vdi", "vpc",
        "vpc-fixed", "vhdx", "luks",
    };

    [SkippableTheory]
    [MemberData(nameof(Cases))]
    public void Map_equals_qemu_img_map(string name)
    {
        ExternalTool.Require("qemu-img");
        ExternalTool.Require("qemu-io");
        (string path, string format, bool luks) = Make(name);
        SettleFiles();
        string[] secret = luks ? ["--object", $"secret,id=s0,data={Secret}"] : [];
        string[] source = luks && format == "luks"
            ? ["--image-opts", $"driver=luks,key-secret=s0,file.filename={path}"]
            : luks ? ["--image-opts", $"driver=qcow2,encrypt.key-secret=s0,file.filename={path}"] : ["-f", format, path];
        string json = ExternalTool.RunChecked("qemu-img", ["map", "--output=json", .. secret, .. source]);

        using ImagePassphrase? passphrase = luks ? ImagePassphrase.FromChars(Secret) : null;
        IReadOnlyList<MapExtent> ours = ImageMapper.Map(path, new BlockOpenOptions { ForceShare = true, Format = ImageFormats.TryParse(format, out ImageFormat f) ? f : null, Passphrase = passphrase });
        AssertSameMap(Expected(json), Render(ours));
    }

    [SkippableFact]
    public void A_range_maps_as_qemu_img_map_start_offset_and_max_length()
    {
        ExternalTool.Require("qemu-img");
        (string path, string format, _) = Make("chain-3");
        SettleFiles();
        foreach ((ulong start, ulong length) in new (ulong, ulong)[] { (0, 4096), (300 * 1024, 1024 * 1024), (3 * 1024 * 1024, 100UL << 30), (1000, 12345) })
        {
            string json = ExternalTool.RunChecked("qemu-img", "map", "--output=json", "-f", format, "--start-offset", $"{start}", "--max-length", $"{length}", path);
            AssertSameMap(Expected(json), Render(ImageMapper.Map(path, null, start, length)));
        }
    }

    [Fact]
    public void A_start_past_the_end_is_refused()
    {
        string path = temp.Combine("small.raw");
        File.WriteAllBytes(path, new byte[4096]);
        var e = Assert.Throws<KvmStorageException>(() => ImageMapper.Map(path, null, 8192));
        Assert.Equal(BlockErrorIds.RangeOutOfBounds, e.ErrorId);
        Assert.Empty(ImageMapper.Map(path, null, 4096));
    }

    /// <summary>
    /// Flushes the images to disk first: while the kernel still writes a file out, its holes can move (a block qemu
    /// zeroed with fallocate turns from hole to data), and two lseek(SEEK_HOLE) a moment apart would disagree.
    /// </summary>
    private void SettleFiles()
    {
        foreach (string file in Directory.GetFiles(temp.Path))
        {
            using FileStream stream = new(file, FileMode.Open, FileAccess.ReadWrite);
            stream.Flush(flushToDisk: true);
        }
    }

    /// <summary>Makes the named image with qemu-img and qemu-io: its path, format, and whether it is encrypted.</summary>
    private (string Path, string Format, bool Luks) Make(string name)
    {
        string Q(string file) => temp.Combine(file);
        void Img(params string[] args) => ExternalTool.RunChecked("qemu-img", args);
        void Io(string format, string file, params string[] commands) =>
            ExternalTool.RunChecked("qemu-io", ["-f", format, .. commands.SelectMany(c => new[] { "-c", c }), file]);
        void Qcow2(string file, string options, params string[] commands)
        {
            Img("create", "-q", "-f", "qcow2", "-o", options, file, "16M");
            Io("qcow2", file, commands);
        }

        string[] mixed = ["write -P 1 0 128k", "write -z 256k 128k", "write -P 2 1M 64k", "write -c -P 3 2M 128k", "write -P 4 4M 4k", "write -P 5 15M 1M", "write -z -u 6M 64k"];
        switch (name)
        {
            case "raw-holes":
                Img("create", "-q", "-f", "raw", Q("a.raw"), "8M");
                Io("raw", Q("a.raw"), "write -P 1 64k 128k", "write -z 1M 64k", "write -P 2 7M 4k");
                return (Q("a.raw"), "raw", false);
            case "raw-odd-size":
                using (FileStream s = File.Create(Q("odd.raw")))
                {
                    s.Write(new byte[5000].Select((_, i) => (byte)(i | 1)).ToArray());
                    s.SetLength(6_000_000);
                }

                return (Q("odd.raw"), "raw", false);
            case "raw-tiny":
                File.WriteAllBytes(Q("tiny.raw"), Enumerable.Repeat((byte)7, 1000).ToArray());
                return (Q("tiny.raw"), "raw", false);
            case "qcow2-mixed":
                Qcow2(Q("m.qcow2"), "compat=1.1", mixed);
                return (Q("m.qcow2"), "qcow2", false);
            case "qcow2-v2":
                Qcow2(Q("v2.qcow2"), "compat=0.10,cluster_size=4096", ["write -P 1 0 12k", "write -z 64k 8k", "write -c -P 3 1M 4k", "write -P 4 3M 1000"]);
                return (Q("v2.qcow2"), "qcow2", false);
            case "qcow2-metadata":
                Qcow2(Q("pm.qcow2"), "preallocation=metadata", "write -P 1 0 64k", "write -P 2 5M 4k");
                return (Q("pm.qcow2"), "qcow2", false);
            case "qcow2-metadata-zeroed":
                Qcow2(Q("pmz.qcow2"), "preallocation=metadata", "write -P 1 0 64k", "write -z 0 64k", "write -z 1M 64k", "write -z -u 2M 128k");
                return (Q("pmz.qcow2"), "qcow2", false);
            case "qcow2-subclusters":
                Qcow2(Q("sub.qcow2"), "extended_l2=on,cluster_size=128k", "write -P 1 4k 8k", "write -z 64k 4k", "write -P 2 1M 128k", "write -z 2M 256k", "write -c -P 3 4M 128k");
                return (Q("sub.qcow2"), "qcow2", false);
            case "qcow2-luks":
                ExternalTool.RunChecked("qemu-img", "create", "-q", "--object", $"secret,id=s0,data={Secret}", "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", Q("enc.qcow2"), "8M");
                ExternalTool.RunChecked("qemu-io", "--object", $"secret,id=s0,data={Secret}", "--image-opts", $"driver=qcow2,encrypt.key-secret=s0,file.filename={Q("enc.qcow2")}", "-c", "write -P 1 0 128k", "-c", "write -z 1M 64k");
                return (Q("enc.qcow2"), "qcow2", true);
            case "chain-2":
                Qcow2(Q("base.qcow2"), "compat=1.1", "write -P 1 0 1M", "write -z 2M 1M", "write -c -P 2 8M 64k");
                Img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", Q("top.qcow2"));
                Io("qcow2", Q("top.qcow2"), "write -P 3 512k 1M", "write -z 4M 64k", "write -P 4 8M 4k");
                return (Q("top.qcow2"), "qcow2", false);
            case "chain-3":
                Make("chain-2");
                Img("create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", Q("top2.qcow2"), "24M");
                Io("qcow2", Q("top2.qcow2"), "write -P 5 3M 64k", "write -z 9M 1M", "write -P 6 20M 64k");
                Img("create", "-q", "-f", "qcow2", "-b", "top2.qcow2", "-F", "qcow2", Q("top3.qcow2"), "12M");
                Io("qcow2", Q("top3.qcow2"), "write -P 7 0 4k");
                return (Q("top3.qcow2"), "qcow2", false);
            case "chain-raw-base":
                Img("create", "-q", "-f", "raw", Q("base.raw"), "4M");
                Io("raw", Q("base.raw"), "write -P 1 1M 1M");
                Img("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", Q("over.qcow2"), "6M");
                Io("qcow2", Q("over.qcow2"), "write -P 2 1536k 64k", "write -z 3M 64k");
                return (Q("over.qcow2"), "qcow2", false);
            default:
                return MakeForeign(name);
        }
    }

    /// <summary>A sample converted by qemu-img into the named foreign format.</summary>
    private (string Path, string Format, bool Luks) MakeForeign(string name)
    {
        string sample = temp.Combine("sample.raw");
        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "raw", sample, "20M");
        ExternalTool.RunChecked("qemu-io", "-f", "raw", "-c", "write -P 1 0 3M", "-c", "write -P 2 10M 100k", "-c", "write -P 3 19M 64k", sample);
        (string format, string[] options) = name switch
        {
            "vmdk" => ("vmdk", Array.Empty<string>()),
            "vmdk-stream" => ("vmdk", ["-o", "subformat=streamOptimized"]),
            "vdi" => ("vdi", []),
            "vpc" => ("vpc", []),
            "vpc-fixed" => ("vpc", ["-o", "subformat=fixed"]),
            "vhdx" => ("vhdx", []),
            "luks" => ("luks", ["--object", $"secret,id=s0,data={Secret}", "-o", "key-secret=s0,iter-time=10"]),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
        string path = temp.Combine($"{name}.img");
        ExternalTool.RunChecked("qemu-img", ["convert", "-f", "raw", "-O", format, .. options, sample, path]);
        return (path, format, format == "luks");
    }

    private static void AssertSameMap(List<string> qemu, List<string> ours) =>
        Assert.True(qemu.SequenceEqual(ours), $"qemu-img map:\n{string.Join('\n', qemu)}\nours:\n{string.Join('\n', ours)}");

    private static List<string> Expected(string json)
    {
        using JsonDocument doc = JsonDocument.Parse(json);
        return [.. doc.RootElement.EnumerateArray().Select(e => Line(
            e.GetProperty("start").GetUInt64(),
            e.GetProperty("length").GetUInt64(),
            e.GetProperty("depth").GetInt32(),
            e.GetProperty("present").GetBoolean(),
            e.GetProperty("zero").GetBoolean(),
            e.GetProperty("data").GetBoolean(),
            e.TryGetProperty("offset", out JsonElement o) ? o.GetUInt64() : null))];
    }

    private static List<string> Render(IReadOnlyList<MapExtent> map) =>
        [.. map.Select(e => Line(e.Start, e.Length, e.Depth, e.Present, e.Zero, e.Data, e.Offset))];

    private static string Line(ulong start, ulong length, int depth, bool present, bool zero, bool data, ulong? offset) =>
        $"start {start} length {length} depth {depth} present {present} zero {zero} data {data} offset {offset?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"}";
}
