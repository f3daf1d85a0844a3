using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

public sealed class DiskTargetNamesTests
{
    [Theory]
    [InlineData("a", 0)]
    [InlineData("b", 1)]
    [InlineData("z", 25)]
    [InlineData("aa", 26)]
    [InlineData("ab", 27)]
    [InlineData("az", 51)]
    [InlineData("ba", 52)]
    [InlineData("zz", 701)]
    [InlineData("aaa", 702)]
    [InlineData("aaz", 727)]
    public void Index_and_letters_map_both_ways(string letters, int index)
    {
        Assert.Equal(letters, DiskTargetNames.FormatIndex(index));
        Assert.True(DiskTargetNames.TryParseIndex(letters, out int parsed));
        Assert.Equal(index, parsed);
    }

    [Fact]
    public void Every_index_up_to_aaaa_round_trips()
    {
        for (int i = 0; i < 20000; i++)
        {
            Assert.True(DiskTargetNames.TryParseIndex(DiskTargetNames.FormatIndex(i), out int back));
            Assert.Equal(i, back);
        }
    }

    [Theory]
    [InlineData("vda", "vd", 0)]
    [InlineData("vdaa", "vd", 26)]
    [InlineData("sdzz", "sd", 701)]
    [InlineData("hdd", "hd", 3)]
    [InlineData("xvdb", "xvd", 1)]
    [InlineData("ubda", "ubd", 0)]
    [InlineData("fda", "fd", 0)]
    public void Valid_targets_parse(string target, string prefix, int index)
    {
        Assert.True(DiskTargetNames.TryParse(target, out string p, out int i));
        Assert.Equal(prefix, p);
        Assert.Equal(index, i);
        DiskTargetNames.Validate(target);
    }

    [Theory]
    [InlineData("vdb1")]
    [InlineData("vdB")]
    [InlineData("vd")]
    [InlineData("xyz1")]
    [InlineData("xyz")]
    [InlineData("")]
    [InlineData("VDA")]
    [InlineData("nvme0")]
    [InlineData("vd-a")]
    [InlineData(" vda")]
    [InlineData("vdzzzzzzzzzzzzzz")]
    public void Invalid_targets_are_refused(string target)
    {
        Assert.False(DiskTargetNames.IsValid(target));
        var e = Assert.Throws<KvmStorageException>(() => DiskTargetNames.Validate(target));
        Assert.Equal(DomainErrorIds.InvalidDiskTarget, e.ErrorId);
        Assert.Equal(ErrorKind.InvalidArgument, e.Kind);
    }

    [Theory]
    [InlineData("virtio", "vd")]
    [InlineData("scsi", "sd")]
    [InlineData("sata", "sd")]
    [InlineData("usb", "sd")]
    [InlineData("ide", "hd")]
    [InlineData("fdc", "fd")]
    public void Bus_prefixes(string bus, string prefix) => Assert.Equal(prefix, DiskTargetNames.PrefixForBus(bus));

    [Fact]
    public void Unknown_bus_is_refused()
    {
        var e = Assert.Throws<KvmStorageException>(() => DiskTargetNames.PrefixForBus("pcie"));
        Assert.Equal(DomainErrorIds.UnsupportedDiskBus, e.ErrorId);
    }

    [Theory]
    [InlineData("virtio", new string[0], "vda")]
    [InlineData("virtio", new[] { "vda", "vdb" }, "vdc")]
    [InlineData("virtio", new[] { "vda", "vdc" }, "vdb")]
    [InlineData("virtio", new[] { "vdb", "vdc" }, "vda")]
    [InlineData("virtio", new[] { "vda", "sda", "hda" }, "vdb")]
    [InlineData("sata", new[] { "sda", "sdb", "vdc" }, "sdc")]
    [InlineData("scsi", new[] { "sda" }, "sdb")]
    [InlineData("usb", new[] { "sda", "sdb", "sdd" }, "sdc")]
    [InlineData("ide", new[] { "hda", "hdc" }, "hdb")]
    [InlineData("virtio", new[] { "vda1", "vdB", "garbage" }, "vda")]
    public void Next_free_counts_gaps_and_shares_sd_between_buses(string bus, string[] used, string expected) =>
        Assert.Equal(expected, DiskTargetNames.NextFree(bus, used));

    [Fact]
    public void Next_free_after_z_is_aa()
    {
        var used = Enumerable.Range(0, 26).Select(i => DiskTargetNames.Format("vd", i)).ToList();
        Assert.Equal("vdz", used[^1]);
        Assert.Equal("vdaa", DiskTargetNames.NextFree("virtio", used));
        used.Add("vdaa");
        Assert.Equal("vdab", DiskTargetNames.NextFree("virtio", used));
    }

    [Fact]
    public void Mixed_buses_fill_the_shared_sd_names_in_turn()
    {
        var used = new List<string>();
        foreach (string bus in new[] { "scsi", "sata", "usb", "sata", "virtio", "scsi" })
        {
            used.Add(DiskTargetNames.NextFree(bus, used));
        }

        Assert.Equal(new[] { "sda", "sdb", "sdc", "sdd", "vda", "sde" }, used);
    }
}
