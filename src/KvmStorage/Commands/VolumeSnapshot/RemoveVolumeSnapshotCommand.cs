using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Images;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeSnapshot;

/// <summary>Remove-VolumeSnapshot: deletes internal snapshots of a qcow2 volume, like <c>qemu-img snapshot -d</c>.</summary>
[Cmdlet(VerbsCommon.Remove, "VolumeSnapshot", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High, DefaultParameterSetName = ByName)]
[OutputType(typeof(void))]
public sealed class RemoveVolumeSnapshotCommand : KvmCmdlet
{
    private const string ByName = "ByName";
    private const string ById = "ById";
    private const string ByObject = "ByObject";

    /// <summary>The qcow2 volume, as a Get-Volume object or an image path.</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ByName, ValueFromPipeline = true)]
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ById, ValueFromPipeline = true)]
    public VolumeReference Volume { get; set; } = null!;

    /// <summary>Names of the snapshots to delete.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = ByName)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(SnapshotNameCompleter))]
    public string[] Name { get; set; } = [];

    /// <summary>Ids of the snapshots to delete.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ById)]
    [ValidateNotNullOrEmpty]
    public string[] Id { get; set; } = [];

    /// <summary>Snapshots as Get-VolumeSnapshot emits them.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ByObject, ValueFromPipeline = true)]
    public Core.Volumes.VolumeSnapshot[] InputObject { get; set; } = [];

    /// <summary>The passphrase of an encrypted volume: proven to open it before the snapshot is deleted.</summary>
    [Parameter]
    public System.Security.SecureString? Passphrase { get; set; }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == ByObject)
        {
            foreach (Core.Volumes.VolumeSnapshot item in InputObject)
            {
                RunForItem(item, () => Remove(VolumeSpec.Of(item), item.Id, item.Name));
            }

            return;
        }

        foreach (string key in ParameterSetName == ById ? Id : Name)
        {
            RunForItem(key, () =>
            {
                VolumeSpec spec = SpecOf(Volume);
                if (ParameterSetName == ById)
                {
                    Remove(spec, key, null);
                }
                else
                {
                    Remove(spec, null, key);
                }
            });
        }
    }

    private void Remove(VolumeSpec spec, string? id, string? name)
    {
        using ImagePassphrase? passphrase = Passphrases.From(Passphrase);
        VolumeAction<SnapshotInfo> delete = Volumes.DeleteSnapshot(spec, id, name, passphrase);
        if (ShouldProcess(delete.Target, delete.Description))
        {
            delete.Run(null, CancellationToken);
        }
    }
}
