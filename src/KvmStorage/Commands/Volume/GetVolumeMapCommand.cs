using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Map;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.Volume;

/// <summary>
/// Get-VolumeMap: where a volume's guest data lies, through its backing chain, like <c>qemu-img map --output=json</c>:
/// one object per run (Start, Length, Data, Zero, Depth, Present, Offset and File), merged as qemu-img merges them.
/// </summary>
[Cmdlet(VerbsCommon.Get, "VolumeMap", DefaultParameterSetName = ByVolume)]
[OutputType(typeof(MapExtent))]
public sealed class GetVolumeMapCommand : VolumeFirstCmdlet
{
    /// <summary>Guest offset to start at, in bytes (qemu-img map --start-offset); default 0.</summary>
    [Parameter]
    [SizeTransformation]
    public ulong StartOffset { get; set; }

    /// <summary>Bytes to map from -StartOffset (qemu-img map --max-length); default: to the end of the volume.</summary>
    [Parameter]
    [SizeTransformation]
    public ulong Length { get; set; }

    /// <summary>The passphrase of an encrypted volume (LUKS); qemu-img map needs the key to open it too.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    protected override void ProcessRecord() => ForEachVolume(spec =>
    {
        using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
        ulong? length = MyInvocation.BoundParameters.ContainsKey(nameof(Length)) ? Length : null;
        VolumeAction<IReadOnlyList<MapExtent>> map = Volumes.Map(spec, StartOffset, length, passphrase);
        foreach (MapExtent extent in RunWithProgress("Get-VolumeMap", $"Mapping {System.IO.Path.GetFileName(map.Target)}", map.Run))
        {
            WriteObject(extent);
        }
    });
}
