using System.Management.Automation;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VolumeSecret;

/// <summary>
/// Remove-VolumeSecret: undefines libvirt secrets. A VM whose disk names a removed secret no longer starts, so each
/// removal is confirmed (ConfirmImpact High).
/// </summary>
[Cmdlet(VerbsCommon.Remove, "VolumeSecret", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(void))]
public sealed class RemoveVolumeSecretCommand : KvmCmdlet
{
    /// <summary>The secrets' UUIDs; binds the Uuid of Get-VolumeSecret's objects from the pipeline.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    public Guid[] Uuid { get; set; } = [];

    protected override void ProcessRecord()
    {
        foreach (Guid uuid in Uuid)
        {
            RunForItem(uuid, () =>
            {
                KvmHost.EnsureWritable($"Removing the secret {uuid}", uuid.ToString("D"));
                if (ShouldProcess(uuid.ToString("D"), "Undefine the libvirt secret (VMs whose disks name it no longer start)"))
                {
                    KvmHost.RemoveSecret(uuid);
                }
            });
        }
    }
}
