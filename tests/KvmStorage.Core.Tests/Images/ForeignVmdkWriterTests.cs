using System.Text;
using System.Text.RegularExpressions;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Vhdx;
using KvmStorage.Core.Images.Vmdk;
using KvmStorage.Core.Tests.Support;
using Microsoft.Win32.SafeHandles;
using Xunit;

namespace KvmStorage.Core.Tests.Images;

public sealed partial class ForeignVmdkWriterTests
{
    [SkippableTheory]
    [InlineData(100UL * 1024 * 1024)]
    [InlineData(40UL * 1024 * 1024 * 1024)]
    [InlineData(1000UL)]
    public void Created_vmdk_is_byte_identical_to_qemu_img_create_apart_from_the_cid(ulong size)
    {
        ExternalTool.Require("qemu-img");
        using var dir = new TempDirectory();
        Directory.CreateDirectory(dir.Combine("ours"));
        Directory.CreateDirectory(dir.Combine("qemu"));
        string ours = dir.Combine("ours", "disk.vmdk");
        string theirs = dir.Combine("qemu", "disk.vmdk");
        using (SafeFileHandle handle = File.OpenHandle(ours, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            new VmdkWriter().Create(handle, ours, new ImageCreateOptions { Format = ImageFormat.Vmdk, VirtualSize = size }, null, CancellationToken.None);
        }

        ExternalTool.RunChecked("qemu-img", "create", "-q", "-f", "vmdk", theirs, size.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(0, ExternalTool.Run("qemu-img", "check", ours).ExitCode);

        byte[] a = File.ReadAllBytes(ours);
        byte[] b = File.ReadAllBytes(theirs);
        Assert.Equal(b.Length, a.Length);
        // The descriptor (sectors 1..20) differs only in qemu's random CID, whose hex length varies.
        const int DescriptorStart = 512;
        const int DescriptorEnd = 21 * 512;
        Assert.True(a.AsSpan(0, DescriptorStart).SequenceEqual(b.AsSpan(0, DescriptorStart)), "headers differ");
        Assert.True(a.AsSpan(DescriptorEnd).SequenceEqual(b.AsSpan(DescriptorEnd)), "grain directories or tables differ");
        string textA = Encoding.ASCII.GetString(a, DescriptorStart, DescriptorEnd - DescriptorStart).TrimEnd('\0');
        string textB = Encoding.ASCII.GetString(b, DescriptorStart, DescriptorEnd - DescriptorStart).TrimEnd('\0');
        Assert.Equal(CidLine().Replace(textB, "CID=x\n"), CidLine().Replace(textA, "CID=x\n"));

        var qemu = ForeignTestImages.QemuInfo(ours);
        ImageInfo info = ForeignTestImages.Inspect(ours);
        Assert.Equal("vmdk", qemu.GetProperty("format").GetString());
        Assert.Equal(qemu.GetProperty("virtual-size").GetUInt64(), info.VirtualSize);
        Assert.Equal((size + 511) / 512 * 512, info.VirtualSize);
        Assert.Equal(65536u, info.ClusterSize);
        var data = qemu.GetProperty("format-specific").GetProperty("data");
        Assert.Equal("monolithicSparse", data.GetProperty("create-type").GetString());
        Assert.Equal(uint.MaxValue, data.GetProperty("parent-cid").GetUInt32());
        Assert.Equal(data.GetProperty("cid").GetUInt32(), info.Vmdk!.Cid);
    }

    [Fact]
    public void Create_without_a_size_is_an_invalid_argument()
    {
        using var dir = new TempDirectory();
        string path = dir.Combine("x.vmdk");
        using SafeFileHandle handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
        var e = Assert.Throws<KvmStorageException>(() => new VmdkWriter().Create(handle, path, new ImageCreateOptions { Format = ImageFormat.Vmdk }, null, CancellationToken.None));
        Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
    }

    [Fact]
    public void Crc32C_matches_the_check_value_and_the_table_path()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        var random = new Random(7);
        byte[] data = new byte[4099];
        random.NextBytes(data);
        for (int n = 0; n < 64; n++)
        {
            Assert.Equal(~Crc32C.UpdateTable(0xFFFFFFFF, data.AsSpan(n)), Crc32C.Compute(data.AsSpan(n)));
        }
    }

    [GeneratedRegex("CID=[0-9a-f]+\n")]
    private static partial Regex CidLine();
}
